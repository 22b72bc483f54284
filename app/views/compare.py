import streamlit as st

st.title("Compare")
st.info("This page reads the store, which is not on main yet.")
