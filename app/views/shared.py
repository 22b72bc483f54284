import streamlit as st

st.title("Shared")
st.info("This page reads the store, which is not on main yet.")
