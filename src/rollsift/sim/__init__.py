"""Simulation of prompt-difficulty dynamics: answers in seconds what a real run answers in hours."""
