"""Pure maths and pictures: geometry and filters, Plotly figures, exports, the Gaussian codec,
alignment (Sim(3), pose graph) and depth video; numpy only, no Streamlit, no torch."""
