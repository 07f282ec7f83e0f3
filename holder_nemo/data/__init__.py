"""Training and evaluation data preparation (`holderpo data prepare NAME OUT_DIR`)."""
