"""How programs are compiled and where they run: the compile helpers and JAX's persistent
compilation cache (compile), the finiteness check (numerics), and the processes and devices of a
run (clusters finds the launcher, distributed joins the processes and places arrays).

Imports: the top-level modules (config, errors, files) only.
"""
