"""CPU and wall seconds of AppTest renders of one dashboard page, in one process (the first render is
that of a new server process; each render opens a new ``Store``, as ``fastdiff bench dashboard`` does).

    PYTHONPATH=<checkout> python tools/time_page_renders.py <FASTDIFF_HOME> <checkout> <view> <renders> ['{"param": "value"}']

CPU seconds (``time.process_time``: every thread of the process) are what a loaded machine changes
least; docs/bench-dashboard.md compares them before and after the store held the runs table's columns.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(home: str, checkout: str, view: str, renders: int, params: dict[str, str]) -> None:
    os.environ["FASTDIFF_HOME"] = home
    from streamlit.testing.v1 import AppTest

    from app import connection

    for i in range(renders):
        connection._store.clear()
        at = AppTest.from_file(f"{checkout}/app/main.py", default_timeout=600)
        for k, v in params.items():
            at.query_params[k] = v
        at.switch_page(f"views/{view}.py")
        cpu, wall = time.process_time(), time.perf_counter()
        at.run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if at.exception:
            raise SystemExit(f"render {i}: {at.exception[0].value}")
        said = [x.value for x in at.caption if "Rendered" in x.value]
        print(f"render {i}: cpu {cpu:.2f} s, wall {wall:.2f} s, page says {said}, load {os.getloadavg()[0]:.1f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]) if len(sys.argv) > 5 else {})
