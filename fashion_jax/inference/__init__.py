"""A trained model applied to images: any photo or .npy to the 28x28 the model sees
(preprocess, backdrop), the predictor (predictor), and the arrays behind the figures
(inspection: feature maps, confusion matrix).

Imports: everything below it (top level, runtime/, data/, model/, storage/, training/).
"""
