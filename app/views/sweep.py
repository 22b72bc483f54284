import streamlit as st

st.title("Sweep")
st.info("This page reads the store, which is not on main yet.")
