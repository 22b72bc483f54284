"""fastdiff dashboard: `streamlit run app/main.py` (started with its workers by `fastdiff up`).

Pages: Explore, Sweep, Compare, Experiments, Queue, Budget calculator. A share link (``?exp=ID``, plus
``&key=…`` when the dashboard has a secret) opens that one experiment read-only, without the
navigation; who may see what is decided by ``app.access`` before any page runs. A page that fails
shows a short error id; its traceback goes to the server's log, never to the browser. The app never
imports torch and never samples: it builds RunSpecs, queues them and reads the store.
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
st.set_option("client.showErrorDetails", "none")  # whatever escapes below: no traceback in the browser
st.set_option("client.toolbarMode", "viewer")  # no developer menu (rerun/clear cache/deploy) for viewers

from app import access, connection

VIEWS = pathlib.Path(__file__).parent / "views"

# Streamlit drops a widget's state when a page without that widget runs; re-assigning it here keeps
# the forms of Explore, Sweep and the Budget calculator across page switches (buttons excluded).
_KEEP_PREFIXES = ("ex.", "sw.", "bc.")
_BUTTONS = {"ex.run", "sw.queue"}
for _key in [k for k in st.session_state if isinstance(k, str) and k.startswith(_KEEP_PREFIXES)]:
    if _key not in _BUTTONS and not _key.endswith((".cancel", ".open", ".undo", ".ok", ".go")) and ".res." not in _key:
        st.session_state[_key] = st.session_state[_key]

# Captions in the page's own text colour at 80% (Streamlit's grey is 3.9:1 on white, under WCAG's 4.5:1;
# this is about 6.7:1 on white and 12:1 on the dark background), checked by axe-core in the browser test.
st.html("<style>[data-testid='stCaptionContainer'] { color: inherit !important; opacity: 0.8; }</style>")

granted = access.gate()
if granted.mode == "shared":
    page = st.navigation([st.Page(VIEWS / "shared.py", title="Shared experiment", url_path="shared")],
                         position="hidden")
else:
    page = st.navigation([
        st.Page(VIEWS / "explore.py", title="Explore", icon=":material/science:", default=True),
        st.Page(VIEWS / "sweep.py", title="Sweep", icon=":material/grid_on:", url_path="sweep"),
        st.Page(VIEWS / "compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page(VIEWS / "experiments.py", title="Experiments", icon=":material/folder_open:", url_path="experiments"),
        st.Page(VIEWS / "queue.py", title="Queue", icon=":material/queue:", url_path="queue"),
        st.Page(VIEWS / "budget_calculator.py", title="Budget calculator", icon=":material/calculate:",
                url_path="budget"),
    ])
_t0 = time.perf_counter()
try:
    page.run()
except Exception:  # noqa: BLE001 - st.stop/st.rerun are BaseExceptions and pass through
    _error_id = connection.logged_error(f"on page {page.title!r}")
    st.error(f"This page failed (error id `{_error_id}`). The details are in the dashboard's log.",
             icon=":material/error:")
finally:  # what the page cost the server (not shown when a page ends early with st.stop())
    st.caption(f"Rendered on the server in {time.perf_counter() - _t0:.2f} s.")
