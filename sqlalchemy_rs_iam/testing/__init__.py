"""A local Redshift stand-in: real PostgreSQL, a Redshift wire front, and an AWS API emulator."""
