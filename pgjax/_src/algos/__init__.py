"""Training loops in the ``make_train(config) -> train(key) -> (params, metrics)`` shape (public: pgjax.algos)."""
