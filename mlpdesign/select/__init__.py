"""The select stage: greedy designs over a pool's kernel."""
