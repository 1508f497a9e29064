"""Using a trained model: pretrained models, speed columns, prediction figures."""
