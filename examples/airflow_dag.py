"""An Airflow 2 DAG that reads Redshift through the rs_iam plugin, with no stored database password.

The engine URL lives in an Airflow Variable (``redshift_iam_url``; here from the environment variable
``AIRFLOW_VAR_REDSHIFT_IAM_URL``), because the Redshift provider's hooks build their own connection from
host/login/password fields and take no plugin parameters. Put the file in ``$AIRFLOW_HOME/dags`` and run::

    AIRFLOW_VAR_REDSHIFT_IAM_URL='redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1' \
        airflow dags test rs_iam_example

The task's AWS identity is the Airflow worker's (instance or task role, ``AWS_PROFILE``, or ``aws_profile=``
in the URL). scripts/airflow_check runs this DAG against the local stand-in.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow import DAG
from airflow.models import Variable
from airflow.operators.python import PythonOperator


def who_am_i() -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(Variable.get("redshift_iam_url"))
    try:
        with engine.connect() as conn:
            user = str(conn.execute(text("select current_user")).scalar())
    finally:
        engine.dispose()
    print(f"rs_iam_example: logged in as {user}")
    report = os.environ.get("RS_IAM_EXAMPLE_REPORT")  # where scripts/airflow_check reads the result
    if report:
        with open(report, "w") as out:
            out.write(user)
    return user


with DAG("rs_iam_example", start_date=datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
    PythonOperator(task_id="who_am_i", python_callable=who_am_i)
