"""Identities of the synthetic world: stable attributes sampled once per person.

An :class:`Identity` fixes everything that does not change between two photos of the same person:
clothing (type, colours, pattern of the upper and lower garment), hair, skin tone, shoes, an optional
bag, hat, body proportions and gait style. :func:`sample_identity` draws one from a seed;
:func:`similar_identity` draws a *hard negative*: a copy of another identity with one or two
attributes changed (re-ID's hardest negatives are people dressed alike).

Colours are RGB uint8 triples; the texture functions (:mod:`priors.synthetic.texture`) read them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

Colour = tuple[int, int, int]

# clothing palette: name -> RGB, and weights for upper / lower garments (street clothes are mostly neutral)
PALETTE: dict[str, Colour] = {
    "black": (28, 28, 32), "charcoal": (62, 62, 68), "grey": (128, 128, 132), "light_grey": (185, 185, 188),
    "white": (236, 236, 230), "navy": (30, 40, 92), "blue": (42, 84, 172), "sky": (120, 165, 215),
    "denim": (62, 88, 132), "red": (184, 32, 38), "maroon": (110, 26, 34), "pink": (232, 140, 172),
    "purple": (112, 52, 142), "green": (40, 112, 62), "olive": (102, 102, 52), "khaki": (182, 160, 112),
    "brown": (112, 76, 46), "yellow": (232, 200, 54), "orange": (230, 120, 40), "beige": (212, 196, 166),
    "teal": (30, 120, 126),
}
UPPER_WEIGHTS = {
    "black": 6, "charcoal": 3, "grey": 3, "light_grey": 2, "white": 7, "navy": 3, "blue": 3, "sky": 2,
    "red": 3, "maroon": 1, "pink": 2, "purple": 2, "green": 2, "olive": 1, "khaki": 1, "brown": 1,
    "yellow": 1, "orange": 1, "beige": 1, "teal": 1,
}
LOWER_WEIGHTS = {
    "black": 8, "charcoal": 3, "grey": 3, "light_grey": 1, "white": 1, "navy": 3, "denim": 6, "sky": 1,
    "khaki": 3, "brown": 1, "beige": 1, "olive": 1, "red": 0.3, "pink": 0.3, "green": 0.3,
}
SHOE_WEIGHTS = {"black": 6, "white": 5, "grey": 2, "brown": 2, "navy": 1, "red": 0.5, "beige": 1}
SKIN_TONES: tuple[Colour, ...] = (
    (241, 204, 178), (226, 180, 150), (205, 152, 118), (176, 124, 90), (140, 96, 68), (100, 68, 48),
)
HAIR_COLOURS: tuple[Colour, ...] = ((20, 16, 14), (42, 30, 22), (78, 54, 34), (128, 96, 58), (196, 170, 110), (150, 148, 146))
HAIR_WEIGHTS = (8, 5, 3, 1.5, 0.7, 0.8)

UPPER_TYPES = ("tshirt", "shirt", "coat", "dress")  # shirt = long sleeves
UPPER_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "print", "twotone")
LOWER_TYPES = ("pants", "shorts", "skirt")
LOWER_PATTERNS = ("solid", "side_stripe")
HAIR_STYLES = ("short", "long", "shaved")
BAGS = ("none", "backpack", "shoulder", "handbag")


@dataclass(frozen=True)
class Identity:
    """Everything that stays the same across the photos of one person.

    Proportions are factors around 1 (``shoulder``, ``hip``, ``girth`` scale widths, ``legs`` the
    leg length, ``head`` the head size); ``stride`` and ``arm_swing`` scale the walking gait.
    ``similar_to`` is the pid this identity was copied from as a hard negative, or -1.
    """

    pid: int
    skin: Colour
    hair_colour: Colour
    hair_style: str
    hat: Colour | None
    upper_type: str
    upper_colour: Colour
    upper_colour2: Colour
    upper_pattern: str
    stripe_freq: int
    lower_type: str
    lower_colour: Colour
    lower_colour2: Colour
    lower_pattern: str
    skirt_length: float
    socks: Colour | None
    shoe_colour: Colour
    bag: str
    bag_colour: Colour
    bag_side: int  # +1: the person's left side, -1: the right side
    shoulder: float = 1.0
    hip: float = 1.0
    girth: float = 1.0
    legs: float = 1.0
    head: float = 1.0
    stride: float = 1.0
    arm_swing: float = 1.0
    similar_to: int = -1
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (colours as lists)."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Identity":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _jitter(rng: np.random.Generator, colour: Colour, amount: float = 0.08) -> Colour:
    """The same named colour differs a little from garment to garment."""
    gains = 1.0 + rng.uniform(-amount, amount, 3) + rng.uniform(-amount, amount)
    return tuple(int(c) for c in np.clip(np.asarray(colour) * gains, 0, 255).round())  # type: ignore[return-value]


def _colour(rng: np.random.Generator, weights: dict[str, float], avoid: Colour | None = None) -> Colour:
    for _ in range(8):
        c = _jitter(rng, PALETTE[_choice(rng, weights)])
        if avoid is None or np.abs(np.subtract(c, avoid)).sum() > 120:
            return c
    return c


def sample_identity(pid: int, rng: np.random.Generator) -> Identity:
    """Draw one identity's attributes."""
    feminine = rng.random() < 0.45
    upper_type = str(rng.choice(UPPER_TYPES, p=[0.55, 0.22, 0.15, 0.08] if feminine else [0.58, 0.27, 0.15, 0.0]))
    upper = _colour(rng, UPPER_WEIGHTS)
    upper2 = _colour(rng, UPPER_WEIGHTS, avoid=upper)
    pattern = str(rng.choice(UPPER_PATTERNS, p=[0.5, 0.14, 0.07, 0.09, 0.12, 0.08]))
    if upper_type == "coat":
        pattern = str(rng.choice(("solid", "checks", "twotone"), p=[0.75, 0.1, 0.15]))
    if upper_type == "dress":
        lower_type = "skirt"
    else:
        lower_type = str(rng.choice(LOWER_TYPES, p=[0.55, 0.2, 0.25] if feminine else [0.72, 0.28, 0.0]))
    lower = upper if upper_type == "dress" else _colour(rng, LOWER_WEIGHTS)
    lower_pattern = "solid" if lower_type == "skirt" or rng.random() < 0.85 else "side_stripe"
    hair_style = str(rng.choice(HAIR_STYLES, p=[0.3, 0.66, 0.04] if feminine else [0.86, 0.04, 0.10]))
    bag = str(rng.choice(BAGS, p=[0.45, 0.25, 0.2, 0.1]))
    bare_ankles = lower_type != "pants"
    return Identity(
        pid=int(pid),
        skin=_jitter(rng, SKIN_TONES[int(rng.choice(len(SKIN_TONES), p=[0.22, 0.3, 0.2, 0.12, 0.1, 0.06]))], 0.04),
        hair_colour=_jitter(rng, HAIR_COLOURS[int(rng.choice(len(HAIR_COLOURS), p=np.divide(HAIR_WEIGHTS, sum(HAIR_WEIGHTS))))], 0.05),
        hair_style=hair_style,
        hat=_colour(rng, UPPER_WEIGHTS) if rng.random() < 0.1 else None,
        upper_type=upper_type,
        upper_colour=upper,
        upper_colour2=upper2,
        upper_pattern=pattern,
        stripe_freq=int(rng.integers(4, 9)),
        lower_type=lower_type,
        lower_colour=lower,
        lower_colour2=_colour(rng, {"white": 3, "black": 1, "red": 1}, avoid=lower),
        lower_pattern=lower_pattern,
        skirt_length=float(rng.uniform(0.14, 0.24)),
        socks=_colour(rng, {"white": 4, "black": 2, "grey": 1}) if bare_ankles and rng.random() < 0.4 else None,
        shoe_colour=_colour(rng, SHOE_WEIGHTS),
        bag=bag,
        bag_colour=_colour(rng, {"black": 5, "navy": 1, "grey": 1, "red": 1, "brown": 2, "pink": 0.5, "khaki": 1}),
        bag_side=int(rng.choice((-1, 1))),
        shoulder=float(rng.uniform(0.88, 1.05) if feminine else rng.uniform(0.97, 1.12)),
        hip=float(rng.uniform(0.98, 1.12) if feminine else rng.uniform(0.9, 1.02)),
        girth=float(rng.uniform(0.86, 1.18)),
        legs=float(rng.uniform(0.94, 1.06)),
        head=float(rng.uniform(0.93, 1.07)),
        stride=float(rng.uniform(0.7, 1.1)),
        arm_swing=float(rng.uniform(0.3, 1.0)),
    )


# attributes a hard negative may change; at most two of them change
_MUTABLE = ("lower_colour", "bag", "hair_style", "shoe_colour", "upper_pattern", "upper_colour2", "girth")


def similar_identity(pid: int, base: Identity, rng: np.random.Generator) -> Identity:
    """A different person dressed like ``base``: the same attributes except one or two."""
    fresh = sample_identity(pid, rng)
    n_changes = int(rng.integers(1, 3))
    changed = [str(a) for a in rng.choice(_MUTABLE, size=n_changes, replace=False)]
    updates = {name: getattr(fresh, name) for name in changed}
    if "lower_colour" in updates and base.upper_type == "dress":
        updates["lower_colour"] = base.lower_colour
        updates["bag"] = fresh.bag if fresh.bag != base.bag else "none" if base.bag != "none" else "backpack"
    if "bag" in updates and updates["bag"] == base.bag:
        updates["bag"] = "none" if base.bag != "none" else "shoulder"
    if "hair_style" in updates and updates["hair_style"] == base.hair_style:
        updates["hair_style"] = "long" if base.hair_style != "long" else "short"
    # the face and body are another person's
    updates.update(skin=fresh.skin, head=fresh.head, legs=fresh.legs, stride=fresh.stride, arm_swing=fresh.arm_swing)
    updates["extra"] = {"changed": changed}
    return dataclasses.replace(base, pid=int(pid), similar_to=base.pid, **updates)


def sample_identities(pids: list[int], seed: int, hard_negative_rate: float = 0.2) -> list[Identity]:
    """Identities for ``pids``, deterministic per (seed, pid); a fraction are hard negatives of an earlier one."""
    out: list[Identity] = []
    for k, pid in enumerate(pids):
        rng = np.random.default_rng([seed, 1, int(pid)])
        if out and rng.random() < hard_negative_rate:
            base = out[int(rng.integers(0, len(out)))]
            out.append(similar_identity(pid, base, rng))
        else:
            out.append(sample_identity(pid, rng))
    return out
