"""Developer and operator tools: the embedded stack, the demo, simulated shoppers, replay of
history, the benchmark and its naive baseline, and the evaluation of segments."""
