"""One train step and one fit loop for every model: the step (steps), evaluation (evaluate),
early stopping, what makes a killed run resumable (resume), one fit call's setup (run), the loop
(loop: fit), what a finished fit leaves (fit_result), TensorBoard events (tensorboard), and
k-fold cross-validation as one vmapped program (cv, cv_folds).

Imports: the top level, runtime/, data/, model/ and storage/.
"""
