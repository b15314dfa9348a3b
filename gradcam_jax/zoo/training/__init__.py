"""Retraining the shipped demo model, apart from the models themselves:
``digit_scenes.py`` (the data: scenes of scikit-learn's digits), ``train_demo.py``
(``python -m gradcam_jax.zoo.training.train_demo``), ``demo_eval.py`` (accuracy and
the pointing game)."""
