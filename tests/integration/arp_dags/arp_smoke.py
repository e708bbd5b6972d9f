"""``arp_smoke``: a two-task DAG for the ``lclstream-arp-launch`` end-to-end test.

``show`` prints the run conf; ``check`` fails when ``conf["fail"]`` is true, so one DAG covers the
success and the failure path. The test copies this file into the standalone Airflow's DAGs folder.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="arp_smoke",
    schedule=None,
    start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["lclstream", "test"],
)
def arp_smoke() -> None:
    @task
    def show() -> dict:
        conf = dict(get_current_context()["dag_run"].conf or {})
        print(f"ARP conf: experiment={conf.get('experiment')} run={conf.get('run')}")
        return conf

    @task
    def check(conf: dict) -> None:
        if conf.get("fail"):
            raise RuntimeError(f"asked to fail (conf={conf})")
        print("ok")

    check(show())


arp_smoke()
