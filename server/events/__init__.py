"""Events: a tracked object seen long enough becomes a stored record with a snapshot and a crop."""
