"""Soak and fault harnesses that run the CLI many times: resume.py kills training at random moments
and checks the resume is bitwise exact; hang.py repeats the simulated-device all-reduce reproducer
(`python -m experiments.soak.resume --kills 20`)."""
