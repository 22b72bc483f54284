"""fastdiff dashboard: `streamlit run app/main.py` (started with its workers by `fastdiff up`).

Pages: Explore, Sweep, Compare, Experiments, Budget calculator. A link with ``?exp=ID`` opens that
experiment read-only, without the navigation (anyone with the link sees the same numbers). The app
never imports torch and never samples: it builds RunSpecs, queues them and reads the store.
"""

from __future__ import annotations

import pathlib
import sys
import time

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run app/main.py` puts app/ first, not the repository
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

st.set_page_config(page_title="fastdiff", page_icon="⏱", layout="wide")

VIEWS = pathlib.Path(__file__).parent / "views"

# Streamlit drops a widget's state when a page without that widget runs; re-assigning it here keeps
# the forms of Explore, Sweep and the Budget calculator across page switches (buttons excluded).
_KEEP_PREFIXES = ("ex.", "sw.", "bc.")
_BUTTONS = {"ex.run", "sw.queue"}
for _key in [k for k in st.session_state if isinstance(k, str) and k.startswith(_KEEP_PREFIXES)]:
    if _key not in _BUTTONS and not _key.endswith((".cancel", ".open")) and ".res." not in _key:
        st.session_state[_key] = st.session_state[_key]

if st.query_params.get("exp"):
    page = st.navigation([st.Page(VIEWS / "shared.py", title="Shared experiment", url_path="shared")],
                         position="hidden")
else:
    page = st.navigation([
        st.Page(VIEWS / "explore.py", title="Explore", icon=":material/science:", default=True),
        st.Page(VIEWS / "sweep.py", title="Sweep", icon=":material/grid_on:", url_path="sweep"),
        st.Page(VIEWS / "compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page(VIEWS / "experiments.py", title="Experiments", icon=":material/folder_open:", url_path="experiments"),
        st.Page(VIEWS / "budget_calculator.py", title="Budget calculator", icon=":material/calculate:",
                url_path="budget"),
    ])
_t0 = time.perf_counter()
try:
    page.run()
finally:  # what the page cost the server (not shown when a page ends early with st.stop())
    st.caption(f"Rendered on the server in {time.perf_counter() - _t0:.2f} s.")
