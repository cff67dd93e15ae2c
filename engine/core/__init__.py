"""The pure, deterministic engine core (no clock, randomness, I/O or floats)."""

#: Version of the engine's decision rules. Bump it whenever the same commands would produce
#: different events (a rule, a rounding, an event's shape). Log directories record the version
#: that wrote them, so an audit can tell "written under other rules" from tampering.
#: 2: a mark's candidates are evaluated one at a time with their counterparties (decision 17),
#: and a repeated mark at exactly 300 % no longer switches a position's liquidation off (18b).
#:    ``list_instrument`` with more than ``engine.core.limits.MAX_TIER_ROWS`` tiers is refused ``too_large``.
#: 3: issue 11 — a cross closing fill repays its position's liability (33a), cross positions exist
#:    only while they owe (19), isolated reverse orders and the seed's closing table (33c, 33d), a
#:    net-mode flip is a full close then an open (32), adjusted equity at isolated placement (35),
#:    futures wallets and ``transfer`` (35b), isolated upl of the remaining position (32b).
RULES_VERSION = 3
