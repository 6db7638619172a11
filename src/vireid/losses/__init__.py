"""Training losses: the paper's (:mod:`.paper`), the Table I baselines (:mod:`.baselines`)
and the one registry that maps ``loss.kind`` to them (:mod:`.registry`)."""
