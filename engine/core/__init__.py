"""The pure, deterministic engine core (no clock, randomness, I/O or floats)."""

#: Version of the engine's decision rules. Bump it whenever the same commands would produce
#: different events (a rule, a rounding, an event's shape). Log directories record the version
#: that wrote them, so an audit can tell "written under other rules" from tampering.
#: 2: a mark's candidates are evaluated one at a time with their counterparties (decision 17),
#: and a repeated mark at exactly 300 % no longer switches a position's liquidation off (18b).
#:    ``list_instrument`` with more than ``engine.core.limits.MAX_TIER_ROWS`` tiers is refused ``too_large``.
RULES_VERSION = 2
