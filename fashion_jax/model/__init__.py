"""The networks and what trains them: the model registry and its modules (models), layers tuned
for XLA:CPU (cpu_layers), the optimizers (optim), and the train state that holds params and
optimizer state (state).

Imports: the top level and runtime/.
"""
