"""sqlalchemy-rs-iam: Amazon Redshift IAM log-in for SQLAlchemy, configured from the engine URL."""
