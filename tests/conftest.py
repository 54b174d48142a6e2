"""Our own suite uses the same stand-in fixtures we ship to users (rs_standin, rs_standin_clean, rs_iam_env,
rs_iam_url)."""

pytest_plugins = ["sqlalchemy_rs_iam.testing.pytest_plugin"]
