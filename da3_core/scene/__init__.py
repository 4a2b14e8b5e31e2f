"""Pure maths and pictures: alignment (Sim(3), pose graph), depth video; numpy only, no Streamlit, no torch."""
