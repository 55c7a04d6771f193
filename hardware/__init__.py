"""Price: what the machine is (host facts, the accelerator catalog), what an hour of it costs
(price tables), and dollars per token from measured or estimated throughput."""
