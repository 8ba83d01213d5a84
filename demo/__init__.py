"""`python -m demo MODEL [MODEL ...]`: a Gradio page that shows scratchformer models at work."""
