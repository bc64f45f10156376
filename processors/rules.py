"""Rule-defined segments: a YAML file of named conditions over features.

A rule file lists segments; each has a `name`, a `description` and a
`condition` built from `all`, `any` and `not` over comparisons
`{feature, op, value}`, identify traits `{trait, op, value}`, time windows
`{event, at_least, within}` and references to other segments `{segment: name}`.
A comparison's value is a literal or a population percentile,
`p75(revenue_30d)`, taken from the model snapshot. :func:`parse_rules` validates
the text with pydantic and reports every error with its line and field;
:attr:`RuleSet.ir` is the small intermediate form the compiled core evaluates
(see :mod:`processors.classifier`).

>>> rules = parse_rules('''
... segments:
...   - name: Buyers
...     description: Ordered at least once.
...     condition: {feature: orders_lifetime, op: ">=", value: 1}
...   - name: Browsers
...     description: Looks a lot, never buys.
...     condition:
...       all:
...         - {feature: product_views_30d, op: ">=", value: 10}
...         - not: {feature: orders_lifetime, op: ">", value: 0}
... ''')
>>> rules.names, rules.ir[:40]
(('Buyers', 'Browsers'), '{"cart_after":1800.0,"order":[0,1],"segm')
>>> parse_rules("segments:\\n  - name: X\\n    condition: {feature: nope, op: '>', value: 1}\\n")
Traceback (most recent call last):
...
processors.rules.RuleFileError: rules: 2 error(s)
  line 2, segments[0].description: Field required
  line 3, segments[0].condition.feature: unknown feature 'nope'; an identify trait is \
`trait: nope`, a computed trait `computed: nope` (docs/rules.md lists the features)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from processors._core import (
    FEATURE_NAMES,
    PREDICTIONS,
    RECENT_SECONDS,
    TEXT_FEATURES,
    pattern_problem,
)
from processors._core import Classifier as CompiledRules
from processors.events import EventKind, Projection
from processors.yaml_files import FileError, Path, Problem, line_of, load_yaml, problems

Node = dict[str, Any]
"""A condition in the rules' intermediate form, as the core evaluates it."""

_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)\(\s*((?:computed\.|prediction\.)?\w+)\s*\)$")


def percentile_name(feature: str, q: float) -> str:
    """The name a percentile threshold is read under, e.g. `p75(revenue_30d)`.

    >>> percentile_name("revenue_30d", 75.0), percentile_name("orders_30d", 99.5)
    ('p75(revenue_30d)', 'p99.5(orders_30d)')
    """
    return f"p{q:g}({feature})"


def parse_percentile(name: str) -> tuple[str, float] | None:
    """`(feature, q)` of a percentile name, or `None` when `name` is not one.

    >>> parse_percentile("p75(revenue_30d)"), parse_percentile("revenue_30d")
    (('revenue_30d', 75.0), None)
    """
    match = _PERCENTILE.match(name.strip())
    return None if match is None else (match.group(2), float(match.group(1)))


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Comparison(_Node):
    """`feature op value`, e.g. `{feature: orders_30d, op: ">=", value: 3}`.

    Numeric features compare with any operator against a number or a
    population percentile `pNN(feature)` (NN from 0 to 100); a percentile not
    known yet makes the comparison false. `between` takes `[low, high]` (both
    included), `in` and `not_in` a list. Text features (`top_category_30d`,
    `last_device`) compare with `==`, `!=`, `in` or `not_in` against names.

    >>> Comparison.model_validate(
    ...     {"feature": "orders_30d", "op": "between", "value": [2, 5]}).compile()
    {'all': [{'feature': 'orders_30d', 'op': '>=', 'value': 2.0}, \
{'feature': 'orders_30d', 'op': '<=', 'value': 5.0}]}
    """

    feature: str
    op: Literal[">", ">=", "<", "<=", "==", "!=", "between", "in", "not_in"]
    value: float | str | list[float | str]

    @field_validator("feature")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in FEATURE_NAMES and name not in TEXT_FEATURES:
            raise ValueError(
                f"unknown feature {name!r}; an identify trait is `trait: {name}`, a computed "
                f"trait `computed: {name}` (docs/rules.md lists the features)"
            )
        return name

    @field_validator("value")
    @classmethod
    def _threshold(
        cls, value: float | str | list[float | str], info: ValidationInfo
    ) -> float | str | list[float | str]:
        feature, op = info.data.get("feature"), info.data.get("op")
        if isinstance(value, list):
            if op not in ("between", "in", "not_in"):
                raise ValueError(f"{op} takes one value")
            if op == "between" and (
                len(value) != 2 or not all(isinstance(v, float) for v in value)
            ):
                raise ValueError("between takes [low, high], two numbers")
            if op == "between" and value[0] > value[1]:  # type: ignore[operator]
                raise ValueError("between takes [low, high] with low <= high")
            if not value:
                raise ValueError(f"{op} takes a list of values")
            return [_checked_threshold(feature, v) for v in value]
        if op in ("between", "in", "not_in"):
            raise ValueError(f"{op} takes a list of values")
        return _checked_threshold(feature, value)

    @model_validator(mode="after")
    def _typed(self) -> Comparison:
        if self.feature in TEXT_FEATURES:
            if self.op not in ("==", "!=", "in", "not_in"):
                raise PydanticCustomError(
                    "text_feature", "a text feature compares with ==, !=, in or not_in"
                )
            values = self.value if isinstance(self.value, list) else [self.value]
            texts = [str(v) for v in values]
            self.__dict__["value"] = texts if isinstance(self.value, list) else texts[0]
        return self

    @property
    def percentiles(self) -> list[tuple[str, float]]:
        """`(feature, q)` of each percentile threshold among the values."""
        if self.feature in TEXT_FEATURES:
            return []
        values = self.value if isinstance(self.value, list) else [self.value]
        found = (parse_percentile(v) for v in values if isinstance(v, str))
        return [threshold for threshold in found if threshold is not None]

    def _one(self, op: str, value: float | str) -> Node:
        node: Node = {"feature": self.feature, "op": op}
        if self.feature in TEXT_FEATURES:
            node["text"] = str(value)
        elif isinstance(value, str):
            node["percentile"] = value
        else:
            node["value"] = float(value)
        return node

    def compile(self) -> Node:
        """The intermediate form: the value as `value` (a number), `text` or `percentile`;
        `between`, `in` and `not_in` as `all` or `any` of comparisons."""
        value = self.value
        if isinstance(value, list):
            if self.op == "between":
                return {"all": [self._one(">=", value[0]), self._one("<=", value[1])]}
            if self.op == "in":
                return {"any": [self._one("==", v) for v in value]}
            return {"all": [self._one("!=", v) for v in value]}
        return self._one(self.op, value)


def _checked_threshold(feature: str | None, value: float | str) -> float | str:
    """A numeric feature's threshold: a number, or a percentile name made canonical."""
    if feature is None or feature in TEXT_FEATURES or not isinstance(value, str):
        return value
    threshold = parse_percentile(value)
    if threshold is None:
        raise ValueError("a number or a percentile such as p75(revenue_30d)")
    name, q = threshold
    if not 0 <= q <= 100:
        raise ValueError("a percentile is between p0 and p100")
    if name not in FEATURE_NAMES:
        raise ValueError(f"unknown numeric feature {name!r}")
    return percentile_name(name, q)


class AllOf(_Node):
    """True when every sub-condition is true."""

    all_of: list[Condition] = Field(alias="all", min_length=1)

    def compile(self) -> Node:
        """The intermediate form."""
        return {"all": [part.compile() for part in self.all_of]}


class AnyOf(_Node):
    """True when at least one sub-condition is true."""

    any_of: list[Condition] = Field(alias="any", min_length=1)

    def compile(self) -> Node:
        """The intermediate form."""
        return {"any": [part.compile() for part in self.any_of]}


class NotOf(_Node):
    """True when the sub-condition is false."""

    not_of: Condition = Field(alias="not")

    def compile(self) -> Node:
        """The intermediate form."""
        return {"not": self.not_of.compile()}


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration_seconds(text: str) -> float | None:
    """Seconds in a duration such as `90s`, `10m`, `1h` or `7d`; `None` when it is not one.

    >>> duration_seconds("30m"), duration_seconds("1.5h"), duration_seconds("soon")
    (1800.0, 5400.0, None)
    """
    match = _DURATION.match(text.strip())
    return None if match is None else float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def checked_duration(text: str, shortest: int, longest: int, examples: str) -> str:
    """`text`, stripped, when it is a duration from `shortest` to `longest` seconds.

    >>> checked_duration(" 10m ", 1, 3600, "10m")
    '10m'
    >>> checked_duration("2h", 1, 3600, "10m")
    Traceback (most recent call last):
    ...
    ValueError: between 1s and 60m
    """
    seconds = duration_seconds(text)
    if seconds is None:
        raise ValueError(f"a duration such as {examples}")
    if not shortest <= seconds <= longest:
        raise ValueError(f"between {_shown(shortest)} and {_shown(longest)}")
    return text.strip()


def _shown(seconds: int) -> str:
    """Whole seconds in days, else minutes, else seconds: `30d`, `60m`, `1s`."""
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400}d"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


TraitScalar = bool | float | str
_TRAIT_PATH = r"^[A-Za-z_$][\w$\-]*(\.[A-Za-z_$][\w$\-]*)*$"


_TEXT_OPS = ("contains", "starts_with", "ends_with", "matches")
_EQUALITY_OPS = ("==", "!=", "in", "not_in")
_TIME_OPS = ("within_last", "more_than_ago")
_NUMBER_OPS = (">", ">=", "<", "<=", "between")
_PRESENCE_OPS = ("exists", "missing")
_ORDER_OPS = (">", ">=", "<", "<=", "==", "!=")
Op = Literal[
    "==",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "between",
    "in",
    "not_in",
    "exists",
    "missing",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "within_last",
    "more_than_ago",
]


class _Test(_Node):
    """`op` and `value` of a trait, property or computed trait condition.

    A value never set, or null, meets only `missing`; `exists` is its
    opposite. `>`, `>=`, `<`, `<=` and `between` (`[low, high]`, both
    included) compare numbers; `contains`, `starts_with`, `ends_with` and
    `matches` (a regular expression, Rust's `regex` syntax, found anywhere)
    compare text; `==`, `!=`, `in` and `not_in` compare value and type (`1` is
    not `"1"`). `case: insensitive` lower-cases both sides of a text
    comparison. `within_last` and `more_than_ago` take a duration and compare a
    time (ISO 8601 text) with the evaluation's moment.
    """

    op: Op
    value: TraitScalar | list[TraitScalar] | None = Field(default=None, validate_default=True)
    case: Literal["sensitive", "insensitive"] = "sensitive"
    _takes_percentiles: ClassVar[bool] = False

    @field_validator("value")
    @classmethod
    def _fits_op(cls, value: TraitScalar | list[TraitScalar] | None, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        percentile = isinstance(value, str) and parse_percentile(value) is not None
        if cls._takes_percentiles and op in _ORDER_OPS and percentile:
            return _computed_percentile(str(value))
        if op in _PRESENCE_OPS:
            if value is not None:
                raise ValueError(f"{op} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{op} takes a list of values")
        elif op in ("==", "!="):
            if value is None or isinstance(value, list):
                raise ValueError(f"{op} takes one value")
        elif op in _TIME_OPS:
            if not isinstance(value, str):
                raise ValueError(f"{op} takes a duration such as 14d")
            return checked_duration(value, 1, 400 * 86_400, "90s, 12h or 14d")
        elif op in _TEXT_OPS:
            if not isinstance(value, str):
                raise ValueError(f"{op} compares with text")
            if op == "matches" and (problem := pattern_problem(value)) is not None:
                raise ValueError(f"not a regular expression: {problem.splitlines()[-1]}")
        elif op == "between":
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(isinstance(v, float) and not isinstance(v, bool) for v in value)
                or value[0] > value[1]  # type: ignore[operator]
            ):
                raise ValueError("between takes [low, high], two numbers with low <= high")
        elif op is not None and (isinstance(value, bool) or not isinstance(value, float)):
            raise ValueError(f"{op} compares with a number")
        return value

    @field_validator("case")
    @classmethod
    def _text_only(cls, case: str, info: ValidationInfo) -> str:
        op = info.data.get("op")
        if case == "insensitive" and op is not None and op not in (*_TEXT_OPS, *_EQUALITY_OPS):
            raise ValueError(f"case applies to text comparisons, not to {op}")
        return case

    def _compiled(self, node: Node) -> Node:
        """`node` with the test's intermediate form: a time operator's duration in seconds."""
        node["op"] = self.op
        if self.op in _TIME_OPS:
            node["value"] = duration_seconds(str(self.value))
        elif self.value is not None:
            node["value"] = self.value
        if self.case == "insensitive":
            node["case"] = "insensitive"
        return node


class TraitCondition(_Test):
    """An identify trait compared with a value: `{trait: plan, op: in, value: [pro, family]}`.

    `trait` names a trait of `identify` calls (`traits`) or of any call's
    `context.traits`, nested ones by a dotted path (`address.country`). A user's
    latest-set value counts. Operators as :class:`_Test` says.

    >>> TraitCondition.model_validate({"trait": "plan", "op": "in", "value": ["pro"]}).compile()
    {'trait': 'plan', 'op': 'in', 'value': ['pro']}
    >>> TraitCondition.model_validate(
    ...     {"trait": "email", "op": "ends_with", "value": "@Example.com", "case": "insensitive"}
    ... ).compile()["case"]
    'insensitive'
    """

    trait: str = Field(min_length=1, max_length=256, pattern=_TRAIT_PATH)

    def compile(self) -> Node:
        """The intermediate form."""
        return self._compiled({"trait": self.trait})


class PropertyCondition(_Test):
    """An event's property compared with a value, in a computed trait's `where`:
    `{property: properties.device, op: in, value: [tv, web]}`.

    The path starts at the message: `properties.plan.tier`, `name`,
    `context.device.type`. Time operators compare with the event's own time.

    >>> PropertyCondition.model_validate(
    ...     {"property": "properties.device", "op": "==", "value": "tv"}).compile()
    {'property': 'properties.device', 'op': '==', 'value': 'tv'}
    """

    property_path: str = Field(alias="property", min_length=1, max_length=256, pattern=_TRAIT_PATH)

    def compile(self) -> Node:
        """The intermediate form."""
        return self._compiled({"property": self.property_path})


class PropertyAll(_Node):
    """True when every property condition is true."""

    all_of: list[PropertyFilter] = Field(alias="all", min_length=1)

    def compile(self) -> Node:
        """The intermediate form."""
        return {"all": [part.compile() for part in self.all_of]}


class PropertyAny(_Node):
    """True when at least one property condition is true."""

    any_of: list[PropertyFilter] = Field(alias="any", min_length=1)

    def compile(self) -> Node:
        """The intermediate form."""
        return {"any": [part.compile() for part in self.any_of]}


class PropertyNot(_Node):
    """True when the property condition is false."""

    not_of: PropertyFilter = Field(alias="not")

    def compile(self) -> Node:
        """The intermediate form."""
        return {"not": self.not_of.compile()}


def _filter_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        for key in ("all", "any", "not", "property"):
            if key in value:
                return key
    return None


PropertyFilter = Annotated[
    Annotated[PropertyCondition, Tag("property")]
    | Annotated[PropertyAll, Tag("all")]
    | Annotated[PropertyAny, Tag("any")]
    | Annotated[PropertyNot, Tag("not")],
    Discriminator(
        _filter_kind,
        custom_error_type="property_condition",
        custom_error_message="a property condition is a mapping with one of: all, any, not, "
        "property",
    ),
]

_DAY = 86_400
_LONGEST_WINDOW = 400 * _DAY


def window_geometry(far: float, near: float = 0.0) -> dict[str, int]:
    """The buckets of a window from `far` to `near` seconds back: exact seconds up to an
    hour, whole minutes up to 48 hours, whole UTC days up to 400 days (by `far`).

    >>> window_geometry(1800), window_geometry(2 * 3600)
    ({'width': 1, 'buckets': 1800, 'skip': 0}, {'width': 60, 'buckets': 120, 'skip': 0})
    >>> window_geometry(90 * 86_400, 30 * 86_400)
    {'width': 86400, 'buckets': 60, 'skip': 30}
    >>> window_geometry(50 * 3600)
    Traceback (most recent call last):
    ...
    ValueError: a window longer than 48h counts whole days: 50h is not a whole number of days
    """
    if far <= 3600:
        width, unit = 1, "second"
    elif far <= 48 * 3600:
        width, unit = 60, "minute"
    else:
        width, unit = _DAY, "day"
    for seconds in (far, near):
        if seconds % width:
            shown = _shown_any(seconds)
            reach = {1: "up to 1h", 60: "up to 48h", _DAY: "longer than 48h"}[width]
            raise ValueError(
                f"a window {reach} counts whole {unit}s: {shown} is not a whole number of {unit}s"
            )
    return {"width": width, "buckets": int((far - near) // width), "skip": int(near // width)}


def _shown_any(seconds: float) -> str:
    """A duration as written most simply: `50h`, `90m`, `1.5s`."""
    for unit, size in (("d", _DAY), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _window(text: str) -> str:
    checked_duration(text, 1, _LONGEST_WINDOW, "10m, 48h or 30d")
    seconds = duration_seconds(text)
    assert seconds is not None
    window_geometry(seconds)
    return text.strip()


class Between(_Node):
    """A window from `between[0]` ago to `between[1]` ago: `{between: [90d, 30d]}`."""

    between: tuple[str, str]

    @field_validator("between")
    @classmethod
    def _ordered(cls, ends: tuple[str, str]) -> tuple[str, str]:
        far, near = (checked_duration(end, 0, _LONGEST_WINDOW, "90d") for end in ends)
        far_seconds, near_seconds = duration_seconds(far), duration_seconds(near)
        assert far_seconds is not None
        assert near_seconds is not None
        if far_seconds <= near_seconds:
            raise ValueError("the first end is further back than the second: [90d, 30d]")
        window_geometry(far_seconds, near_seconds)
        return far, near


_AGGREGATES = Literal[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "distinct_count",
    "most_frequent",
    "first",
    "last",
    "first_time",
    "last_time",
]
_WITHOUT_OF = ("count", "first_time", "last_time")
_NUMERIC_AGGREGATES = ("count", "sum", "avg", "min", "max", "distinct_count")


class Calls(_Node):
    """Which of the user's calls count: `event` (one `track` event name), `events`
    (several), `any: true` (every `track` event) or `page` (`page` and `screen` calls
    by name), filtered by `where`, conditions over their properties.

    >>> Calls.model_validate({"event": "Signed Up"}).select()
    {'events': ['Signed Up'], 'any': False, 'pages': []}
    """

    event: str | None = Field(default=None, min_length=1, max_length=256)
    events: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, min_length=1
    )
    any_event: Literal[True] | None = Field(default=None, alias="any")
    page: str | None = Field(default=None, min_length=1, max_length=256)
    where: PropertyFilter | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> Calls:
        chosen = [self.event, self.events, self.any_event, self.page]
        if sum(choice is not None for choice in chosen) != 1:
            raise PydanticCustomError(
                "calls", "name exactly one of event, events, any: true or page"
            )
        return self

    def select(self) -> Node:
        """The calls chosen, in the intermediate form."""
        return {
            "events": [self.event] if self.event else sorted(set(self.events or [])),
            "any": bool(self.any_event),
            "pages": [self.page] if self.page else [],
        }

    def names(self) -> set[str]:
        """The event and page names chosen."""
        return {*(self.events or []), *(n for n in (self.event, self.page) if n)}

    def paths(self) -> set[str]:
        """Every property path its `where` reads."""
        found: set[str] = set()
        stack: list[Any] = [self.where] if self.where is not None else []
        while stack:
            node = stack.pop()
            if isinstance(node, PropertyCondition):
                found.add(node.property_path)
            elif isinstance(node, PropertyAll | PropertyAny):
                stack.extend(node.all_of if isinstance(node, PropertyAll) else node.any_of)
            elif isinstance(node, PropertyNot):
                stack.append(node.not_of)
        return found

    def folded(self, aggregate: str, window: dict[str, int] | None) -> Node:
        """The computed trait that folds these calls with `aggregate` over `window`."""
        return {
            "select": self.select(),
            "where": None if self.where is None else self.where.compile(),
            "aggregate": aggregate,
            "of": None,
            "window": window,
        }


class ComputedTrait(Calls):
    """An aggregate of the user's own events over a window, declared under `computed:`.

    The calls counted are chosen as :class:`Calls` says; `aggregate` folds
    them, over the property `of` (not for `count`, `first_time`, `last_time`);
    `window` is a duration (`30m`, `36h`, `30d`), `{between: [90d, 30d]}` or
    `lifetime`. docs/rules.md ("Computed traits") gives the exact semantics.

    >>> ComputedTrait.model_validate({"event": "Video Played", "aggregate": "count",
    ...                               "window": "7d"}).definition()["window"]
    {'width': 86400, 'buckets': 7, 'skip': 0}
    """

    aggregate: _AGGREGATES
    of: str | None = Field(default=None, min_length=1, max_length=256, pattern=_TRAIT_PATH)
    window: Literal["lifetime"] | Between | str = "lifetime"

    @field_validator("window")
    @classmethod
    def _window_range(cls, window: str | Between) -> str | Between:
        if isinstance(window, str) and window != "lifetime":
            return _window(window)
        return window

    @model_validator(mode="after")
    def _complete(self) -> ComputedTrait:
        if self.aggregate in _WITHOUT_OF and self.of is not None:
            raise PydanticCustomError(
                "computed_of", f"{self.aggregate} takes no property: leave out of"
            )
        if self.aggregate not in _WITHOUT_OF and self.of is None:
            raise PydanticCustomError(
                "computed_of", f"{self.aggregate} aggregates a property: name it with of"
            )
        return self

    def window_seconds(self) -> float | None:
        """How far back the window reaches, in seconds; `None` for `lifetime`."""
        if isinstance(self.window, Between):
            return duration_seconds(self.window.between[0])
        return None if self.window == "lifetime" else duration_seconds(self.window)

    def definition(self) -> Node:
        """The intermediate form, without names or key."""
        window: dict[str, int] | None = None
        if isinstance(self.window, Between):
            far, near = (duration_seconds(end) for end in self.window.between)
            assert far is not None
            assert near is not None
            window = window_geometry(far, near)
        elif self.window != "lifetime":
            seconds = duration_seconds(self.window)
            assert seconds is not None
            window = window_geometry(seconds)
        return {**self.folded(self.aggregate, window), "of": self.of}

    def paths(self) -> set[str]:
        """Every property path the trait reads."""
        return super().paths() | ({self.of} if self.of else set())


def definition_key(definition: Node) -> str:
    """The key a computed trait's cells are stored under: a digest of its definition, so
    a changed definition starts afresh and equal ones share their cells."""
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def _seconds(text: str, examples: str) -> str:
    return checked_duration(text, 1, _LONGEST_WINDOW, examples)


class SequenceCondition(_Node):
    """Steps done in order within `within`: `{sequence: [{event: Trial Started},
    {event: Subscription Cancelled}], within: 14d}`.

    Each step chooses calls as :class:`Calls` does; each comes strictly after
    the one before (to the second), the last at most `within` after the first.
    True from the completion for as long as it lies within `window` (default
    `30d`); exact to the second, and time alone ends it.
    """

    sequence: list[Calls] = Field(min_length=2, max_length=8)
    within: str
    window: str = "30d"

    @field_validator("within", "window")
    @classmethod
    def _duration(cls, text: str) -> str:
        return _seconds(text, "30m, 12h or 14d")

    def spans(self) -> tuple[int, int]:
        """`within` and `window` in whole seconds."""
        within, window = duration_seconds(self.within), duration_seconds(self.window)
        assert within is not None
        assert window is not None
        return int(within), int(window)

    def compile(self) -> Node:
        """The intermediate form: each step's event times (:class:`RuleSet` numbers them)."""
        within, window = self.spans()
        kept = {"width": 1, "buckets": within + window, "skip": 0}
        steps = [step.folded("count", kept) for step in self.sequence]
        return {"sequence": steps, "within": within, "window": window}


class AbsenceCondition(_Node):
    """An event with no other following it in time: `{after: {event: Checkout Started},
    not: {event: Order Completed}, within: 30m}`.

    True from `within` after the latest `after` event, when no `not` event came
    at or after it, until the next `after` or `not` event, or for `for` (default:
    for ever). A timer makes it true at that moment of event time, with nobody
    sending anything.
    """

    after: Calls
    not_: Calls = Field(alias="not")
    within: str
    lasting: str | None = Field(default=None, alias="for")

    @field_validator("within", "lasting")
    @classmethod
    def _duration(cls, text: str | None) -> str | None:
        return None if text is None else _seconds(text, "30m, 12h or 14d")

    def compile(self) -> Node:
        """The intermediate form: the latest time of each (:class:`RuleSet` numbers them)."""
        within = duration_seconds(self.within)
        assert within is not None
        lasting = None if self.lasting is None else duration_seconds(self.lasting)
        return {
            "after": self.after.folded("last_time", None),
            "missing": self.not_.folded("last_time", None),
            "within": int(within),
            "for": None if lasting is None else int(lasting),
        }


class ComputedCondition(_Test):
    """A computed trait compared: `{computed: watch_minutes_30d, op: ">=", value: 600}`.

    Operators as :class:`_Test` says; a computed trait with no event in its
    window is 0 (`count`, `sum`, `distinct_count`) or null (the others, which
    then meet only `missing`). A numeric one also compares (`>`, `>=`, `<`,
    `<=`, `==`, `!=`) with a population percentile of a numeric computed trait,
    `p90(watch_minutes_30d)`: false until the model knows it.

    >>> ComputedCondition.model_validate(
    ...     {"computed": "minutes", "op": ">=", "value": "p90(minutes)"}
    ... ).compile()
    {'computed': 'minutes', 'op': '>=', 'percentile': 'p90(computed.minutes)'}
    """

    computed: str = Field(min_length=1, max_length=64)
    _takes_percentiles: ClassVar[bool] = True

    @property
    def percentiles(self) -> list[tuple[str, float]]:
        """`(computed.NAME, q)` of the percentile threshold, if the value is one."""
        found = parse_percentile(self.value) if isinstance(self.value, str) else None
        return [] if found is None or not found[0].startswith(COMPUTED_PREFIX) else [found]

    def compile(self) -> Node:
        """The intermediate form, naming the trait (:class:`RuleSet` numbers it)."""
        if self.percentiles:
            return {"computed": self.computed, "op": self.op, "percentile": self.value}
        return self._compiled({"computed": self.computed})


class PredictionCondition(_Node):
    """A prediction compared: `{prediction: purchase_30d, op: ">=", value: 0.7}`.

    `purchase_30d` and `churn_90d` are probabilities (0 to 1), `revenue_90d` an
    amount of currency (docs/predictions.md). The value is a number or a
    population percentile of a prediction, `p90(revenue_90d)`; `between` takes
    `[low, high]` (both included). The comparison is false while the
    prediction is gated (the model has too few labelled examples) and while a
    percentile is unknown.

    >>> PredictionCondition.model_validate(
    ...     {"prediction": "revenue_90d", "op": ">=", "value": "p90(revenue_90d)"}
    ... ).compile()
    {'prediction': 'revenue_90d', 'op': '>=', 'percentile': 'p90(prediction.revenue_90d)'}
    """

    prediction: str
    op: Literal[">", ">=", "<", "<=", "between"]
    value: float | str | list[float]

    @field_validator("prediction")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PREDICTIONS:
            raise ValueError(f"unknown prediction {name!r} (known: {', '.join(PREDICTIONS)})")
        return name

    @field_validator("value")
    @classmethod
    def _threshold(cls, value: float | str | list[float], info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op == "between":
            if not isinstance(value, list) or len(value) != 2 or value[0] > value[1]:
                raise ValueError("between takes [low, high], two numbers with low <= high")
            return value
        if isinstance(value, list):
            raise ValueError(f"{op} takes one value")
        if isinstance(value, float):
            return value
        found = parse_percentile(value)
        if found is None:
            raise ValueError("a number or a percentile such as p90(revenue_90d)")
        name, q = found
        name = name.removeprefix(PREDICTION_PREFIX)
        if name not in PREDICTIONS:
            raise ValueError(f"a percentile of a prediction; {name!r} is none")
        if not 0 <= q <= 100:
            raise ValueError("a percentile is between p0 and p100")
        return percentile_name(PREDICTION_PREFIX + name, q)

    @property
    def percentiles(self) -> list[tuple[str, float]]:
        """`(prediction.NAME, q)` of the percentile threshold, if the value is one."""
        found = parse_percentile(self.value) if isinstance(self.value, str) else None
        return [] if found is None else [found]

    def _one(self, op: str, value: float | str) -> Node:
        if isinstance(value, str):
            return {"prediction": self.prediction, "op": op, "percentile": value}
        return {"prediction": self.prediction, "op": op, "value": float(value)}

    def compile(self) -> Node:
        """The intermediate form; `between` as `all` of two comparisons."""
        if isinstance(self.value, list):
            low, high = self.value
            return {"all": [self._one(">=", low), self._one("<=", high)]}
        return self._one(self.op, self.value)


PREDICTION_PREFIX = "prediction."
"""What percentile thresholds and the model's quantiles put before a prediction's name
(`p90(prediction.revenue_90d)`)."""

COMPUTED_PREFIX = "computed."
"""What percentile thresholds and the model's quantiles put before a computed trait's
name (`p90(computed.watch_minutes_30d)`): computed traits may share a feature's name."""


def _computed_percentile(value: str) -> str:
    """A computed trait's percentile threshold made canonical: `p90(computed.NAME)`."""
    found = parse_percentile(value)
    assert found is not None
    name, q = found
    if not 0 <= q <= 100:
        raise ValueError("a percentile is between p0 and p100")
    return percentile_name(COMPUTED_PREFIX + name.removeprefix(COMPUTED_PREFIX), q)


_CATEGORY_KINDS = {
    "Product Viewed": EventKind.PRODUCT_VIEWED,
    "Product Added": EventKind.CART_ADD,
    "Product Removed": EventKind.CART_REMOVE,
    "Order Completed": EventKind.ORDER,
}


class Burst(_Node):
    """At least `at_least` `event`s within `within`, e.g. `{event: Video Played, at_least: 3,
    within: 7d}`.

    Any `track` event counts by name, filtered by `where` (property
    conditions), over a window of up to 400 days with the computed traits'
    window semantics. For the four product events (`Product Viewed`, `Product
    Added`, `Product Removed`, `Order Completed`) without `where`, windows up to
    1h count per category (`per: category`, their default): true while the
    user's latest such events show `at_least` of one category in `within` up to
    the evaluation time.
    """

    event: str = Field(min_length=1, max_length=256)
    at_least: int = Field(ge=1, le=10_000)
    within: str
    per: Literal["category", "event"] | None = None
    where: PropertyFilter | None = None

    @field_validator("within")
    @classmethod
    def _duration(cls, text: str) -> str:
        return _window(text)

    @model_validator(mode="after")
    def _per_category(self) -> Burst:
        if self.per == "category":
            if self.event not in _CATEGORY_KINDS:
                raise PydanticCustomError(
                    "per_category",
                    "per: category counts Product Viewed, Product Added, Product Removed or "
                    "Order Completed",
                )
            if self.where is not None:
                raise PydanticCustomError("per_category", "per: category takes no where")
            seconds = duration_seconds(self.within)
            if seconds is None or seconds > RECENT_SECONDS:
                raise PydanticCustomError("per_category", "per: category counts within 1h or less")
        return self

    @property
    def per_category(self) -> bool:
        """Whether it counts per category (a burst of one of the four product events)."""
        if self.per is not None:
            return self.per == "category"
        seconds = duration_seconds(self.within)
        return (
            self.event in _CATEGORY_KINDS
            and self.where is None
            and seconds is not None
            and seconds <= RECENT_SECONDS
        )

    def counted(self) -> ComputedTrait:
        """The computed trait it compares, when it does not count per category."""
        return ComputedTrait.model_construct(
            event=self.event,
            events=None,
            any_event=None,
            page=None,
            where=self.where,
            aggregate="count",
            of=None,
            window=self.within,
        )

    def compile(self) -> Node:
        """The intermediate form: a burst (kind, window in seconds, least count), or the
        count of a computed trait of its own (:class:`RuleSet` numbers it)."""
        if not self.per_category:
            return {"computed": self.counted().definition(), "op": ">=", "value": self.at_least}
        seconds = duration_seconds(self.within)
        assert seconds is not None
        kind = _CATEGORY_KINDS[self.event].name
        return {"burst": kind, "within": seconds, "at_least": self.at_least}


class InSegment(_Node):
    """True when the user is in another segment of the file: `{segment: Lapsed Customers}`.

    Segments are evaluated after the ones they refer to; a cycle of
    references is an error.
    """

    segment: str = Field(min_length=1)

    def compile(self) -> Node:
        """The intermediate form."""
        return {"segment": self.segment}


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        keys = ("sequence", "after", "all", "any", "not", "feature", "trait", "computed")
        for key in (*keys, "prediction", "event", "segment"):
            if key in value:
                return key
    return None


Condition = Annotated[
    Annotated[Comparison, Tag("feature")]
    | Annotated[TraitCondition, Tag("trait")]
    | Annotated[ComputedCondition, Tag("computed")]
    | Annotated[PredictionCondition, Tag("prediction")]
    | Annotated[SequenceCondition, Tag("sequence")]
    | Annotated[AbsenceCondition, Tag("after")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[Burst, Tag("event")]
    | Annotated[InSegment, Tag("segment")],
    Discriminator(
        _condition_kind,
        custom_error_type="condition",
        custom_error_message=(
            "a condition is a mapping with one of: all, any, not, feature, trait, computed, "
            "prediction, event, sequence, after, segment"
        ),
    ),
]


class SegmentRule(_Node):
    """One named segment and the condition a user's features must meet.

    Segments sharing a `group` are mutually exclusive: a user is in the first
    of them, in file order, whose condition holds.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w \-]*$")
    description: str
    condition: Condition
    group: str | None = Field(default=None, min_length=1, max_length=64)


class RuleFile(_Node):
    """The whole YAML document.

    `cart_abandonment_after` is how long a cart must be left alone, with no
    order, for the feature `cart_abandoned` to turn 1 (default `30m`).
    """

    cart_abandonment_after: str = "30m"
    computed: dict[
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][\w]*$")],
        ComputedTrait,
    ] = {}
    segments: list[SegmentRule] = Field(min_length=1)

    @field_validator("cart_abandonment_after")
    @classmethod
    def _cart_duration(cls, text: str) -> str:
        return checked_duration(text, 60, 30 * 86_400, "30m, 2h or 1d")


class RuleFileError(FileError):
    """A rule file that cannot be used; `errors` lists every problem."""


class RuleSet:
    """Validated rules and their intermediate form, which the core evaluates.

    Segments are decided in an order where every segment comes after those it
    refers to and after the earlier members of its priority group; :attr:`ir`
    carries that order.
    """

    def __init__(
        self, definition: RuleFile, digest: str, version: int | None = None, text: str = ""
    ) -> None:
        self.definition = definition
        self.text = text
        """The file as written (empty when built from a definition alone)."""
        self.digest = digest
        self.version = version
        self.names = tuple(rule.name for rule in definition.segments)
        seconds = duration_seconds(definition.cart_abandonment_after)
        assert seconds is not None
        rank = {name: index for index, name in enumerate(self.names)}
        numbering = _ComputedNumbering(definition.computed)
        segments = [
            {
                "name": rule.name,
                "group": rule.group,
                "condition": numbering.numbered(rule.condition.compile()),
            }
            for rule in definition.segments
        ]
        self.computed: tuple[Node, ...] = tuple(numbering.found)
        """Every computed trait's intermediate form, each definition once, as numbered in
        conditions: `names` (none for a time-window condition's own count) and `key`."""
        self.ir = orjson.dumps(
            {
                "cart_after": seconds,
                "order": [rank[name] for name in _decision_order(definition)],
                "segments": segments,
                "computed": self.computed,
            }
        ).decode()
        """The rules in the core's intermediate form (JSON)."""

    @property
    def label(self) -> str:
        """What change events name these rules by: `v<version>` once published, else the digest."""
        return f"v{self.version}" if self.version is not None else f"file:{self.digest}"

    @property
    def percentiles(self) -> set[tuple[str, float]]:
        """Every `(feature, q)` percentile threshold the rules use (a computed trait's as
        `computed.NAME`, a prediction's as `prediction.NAME`)."""
        found = set()
        for rule in self.definition.segments:
            for node in _nodes(rule.condition):
                if isinstance(node, Comparison | ComputedCondition | PredictionCondition):
                    found.update(node.percentiles)
        return found

    @property
    def model_needs(self) -> dict[str, frozenset[str]]:
        """Per segment, what only a model snapshot gives it: the percentiles it compares
        (`p90(revenue_30d)`) and the predictions (`prediction.purchase_30d`), with those of
        the segments it refers to and of the earlier members of its group.

        >>> rules = parse_rules("segments:\\n  - {name: Big, description: d, condition: "
        ...                     "{feature: revenue_30d, op: '>=', value: p90(revenue_30d)}}\\n"
        ...                     "  - {name: Not Big, description: d, condition: {not: "
        ...                     "{segment: Big}}}\\n")
        >>> sorted(rules.model_needs["Not Big"])
        ['p90(revenue_30d)']
        """
        own: dict[str, set[str]] = {}
        for rule in self.definition.segments:
            needs = own.setdefault(rule.name, set())
            for node in _nodes(rule.condition):
                if isinstance(node, Comparison | ComputedCondition | PredictionCondition):
                    needs.update(percentile_name(f, q) for f, q in node.percentiles)
                if isinstance(node, PredictionCondition):
                    needs.add(PREDICTION_PREFIX + node.prediction)
        before = _dependencies(self.definition)
        found: dict[str, frozenset[str]] = {}
        for name in _decision_order(self.definition):
            inherited = (found[other] for other in before[name])
            found[name] = frozenset(own[name].union(*inherited))
        return found

    @property
    def segment_digests(self) -> dict[str, str]:
        """Per segment, a digest of everything its membership depends on: its condition and
        group, the segments it refers to and the earlier members of its group (their digests
        in turn), and the cart abandonment time. A segment whose digest did not change
        between two rule files keeps the same members.

        >>> one = parse_rules("segments:\\n  - {name: A, description: d, condition: "
        ...                   "{feature: orders_30d, op: '>', value: 1}}\\n")
        >>> two = parse_rules("segments:\\n  - {name: A, description: other words, condition: "
        ...                   "{feature: orders_30d, op: '>', value: 1}}\\n")
        >>> one.segment_digests == two.segment_digests
        True
        """
        rules = {rule.name: rule for rule in self.definition.segments}
        before = _dependencies(self.definition)
        numbering = _ComputedNumbering(self.definition.computed)
        found: dict[str, str] = {}
        for name in _decision_order(self.definition):
            rule = rules[name]
            basis = {
                "condition": numbering.defined(rule.condition.compile()),
                "group": rule.group,
                "cart_after": duration_seconds(self.definition.cart_abandonment_after),
                "after": sorted(found[other] for other in before[name]),
            }
            found[name] = hashlib.sha256(orjson.dumps(basis)).hexdigest()[:16]
        return {name: found[name] for name in self.names}

    @cached_property
    def traits(self) -> tuple[str, ...]:
        """The traits the rules compare, sorted: those the decoder keeps.

        >>> parse_rules("segments:\\n  - {name: Pro, description: d, condition: "
        ...             "{trait: plan, op: '==', value: pro}}\\n").traits
        ('plan',)
        """
        return tuple(
            sorted(
                {
                    node.trait
                    for rule in self.definition.segments
                    for node in _nodes(rule.condition)
                    if isinstance(node, TraitCondition)
                }
            )
        )

    @cached_property
    def predictions(self) -> tuple[str, ...]:
        """The predictions the rules compare, sorted.

        >>> parse_rules("segments:\\n  - {name: Likely, description: d, condition: "
        ...             "{prediction: purchase_30d, op: '>=', value: 0.7}}\\n").predictions
        ('purchase_30d',)
        """
        return tuple(
            sorted(
                {
                    node.prediction
                    for rule in self.definition.segments
                    for node in _nodes(rule.condition)
                    if isinstance(node, PredictionCondition)
                }
            )
        )

    @cached_property
    def compiled(self) -> CompiledRules:
        """The rules compiled alone, without thresholds or a model: what reads a user's
        computed traits (`User.computed`)."""
        return CompiledRules(self.ir, [], [])

    @cached_property
    def projection(self) -> Projection:
        """What the decoder keeps for these rules: the traits they compare, and the names
        and properties of the calls their computed traits count.

        >>> rules = parse_rules(
        ...     "computed:\\n  minutes: {event: Played, aggregate: sum, of: properties.minutes}\\n"
        ...     "segments:\\n  - {name: Pro, description: d, condition: "
        ...     "{trait: plan, op: '==', value: pro}}\\n")
        >>> rules.projection
        Projection(traits=('plan',), events=('Played',), properties=('properties.minutes',))
        """
        counted: list[Calls] = [*self.definition.computed.values()]
        for rule in self.definition.segments:
            for node in _nodes(rule.condition):
                if isinstance(node, Burst) and not node.per_category:
                    counted.append(node.counted())
                elif isinstance(node, SequenceCondition):
                    counted.extend(node.sequence)
                elif isinstance(node, AbsenceCondition):
                    counted.extend((node.after, node.not_))
        names = sorted({name for calls in counted for name in calls.names()})
        every = any(calls.any_event for calls in counted)
        paths = sorted({path for calls in counted for path in calls.paths()})
        return Projection(self.traits, True if every else tuple(names), tuple(paths))

    @property
    def bursts(self) -> dict[str, list[Burst]]:
        """Per segment, its conditions that count bursts per category (segments without any
        left out)."""
        found: dict[str, list[Burst]] = {}
        for rule in self.definition.segments:
            bursts = [
                node
                for node in _nodes(rule.condition)
                if isinstance(node, Burst) and node.per_category
            ]
            if bursts:
                found[rule.name] = bursts
        return found


class _ComputedNumbering:
    """Numbers computed traits as conditions meet them: the named ones first, in file order,
    then each time-window condition's own count; equal definitions share a number."""

    def __init__(self, named: Mapping[str, ComputedTrait]) -> None:
        self.found: list[Node] = []
        self._keys: dict[str, int] = {}
        self._named: dict[str, int] = {}
        for name, trait in named.items():
            self._named[name] = self._number(trait.definition(), name)

    def _number(self, definition: Node, name: str | None = None) -> int:
        key = definition_key(definition)
        if key not in self._keys:
            self._keys[key] = len(self.found)
            self.found.append({"names": [], "key": key, **definition})
        index = self._keys[key]
        if name is not None:
            self.found[index]["names"].append(name)
        return index

    def numbered(self, node: Node) -> Node:
        """`node` with each computed trait it reads (a name or a definition) numbered."""
        if "computed" in node:
            named = node["computed"]
            index = self._named[named] if isinstance(named, str) else self._number(named)
            return {**node, "computed": index}
        if "sequence" in node:
            return {**node, "sequence": [self._number(step) for step in node["sequence"]]}
        if "after" in node:
            after, missing = self._number(node["after"]), self._number(node["missing"])
            return {**node, "after": after, "missing": missing}
        return self._parts(node, self.numbered)

    def defined(self, node: Node) -> Node:
        """`node` with each computed trait it names replaced by its definition."""
        if isinstance(node.get("computed"), str):
            definition = self.found[self._named[node["computed"]]]
            return {**node, "computed": {k: v for k, v in definition.items() if k != "names"}}
        return self._parts(node, self.defined)

    @staticmethod
    def _parts(node: Node, each: Callable[[Node], Node]) -> Node:
        for key in ("all", "any"):
            if key in node:
                return {key: [each(part) for part in node[key]]}
        if "not" in node:
            return {"not": each(node["not"])}
        return node


def _nodes(condition: Condition) -> Iterator[Condition]:
    """`condition` and every condition nested in it."""
    yield condition
    if isinstance(condition, AllOf | AnyOf):
        for part in condition.all_of if isinstance(condition, AllOf) else condition.any_of:
            yield from _nodes(part)
    elif isinstance(condition, NotOf):
        yield from _nodes(condition.not_of)


def _dependencies(definition: RuleFile) -> dict[str, list[str]]:
    """Per segment, the segments to decide before it: references, then earlier group members."""
    before: dict[str, list[str]] = {}
    group_members: dict[str, list[str]] = {}
    for rule in definition.segments:
        refs = [n.segment for n in _nodes(rule.condition) if isinstance(n, InSegment)]
        earlier = group_members.setdefault(rule.group, []) if rule.group else []
        before[rule.name] = [*refs, *earlier]
        if rule.group:
            earlier.append(rule.name)
    return before


def _decision_order(definition: RuleFile) -> list[str]:
    """Segment names with each after its dependencies (file order otherwise)."""
    before = _dependencies(definition)
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)
        for dependency in before[name]:
            place(dependency)
        order.append(name)

    for rule in definition.segments:
        place(rule.name)
    return order


def _raw_conditions(node: Any, path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """Every condition of a document's `condition:` as written, with its path: read before
    validation, so that its problems come with those validation finds."""
    if not isinstance(node, dict):
        return
    yield node, path
    for key in ("all", "any"):
        if isinstance(node.get(key), list):
            for index, part in enumerate(node[key]):
                yield from _raw_conditions(part, (*path, key, index))
    yield from _raw_conditions(node.get("not"), (*path, "not"))


def _name_errors(document: dict[str, Any], lines: dict[Path, int]) -> list[Problem]:
    """Duplicate segment names and references to segments the file does not have, each at
    its own line, from the document as written."""
    segments = document.get("segments")
    if not isinstance(segments, list):
        return []
    found = []
    names: set[Any] = set()
    for index, segment in enumerate(segments):
        name = segment.get("name") if isinstance(segment, dict) else None
        if isinstance(name, str) and name in names:
            line = lines.get(("segments", index, "name"))
            found.append(
                Problem(line, f"segments[{index}].name", f"duplicate segment name {name!r}")
            )
        names.add(name)
    for index, segment in enumerate(segments):
        if not isinstance(segment, dict):
            continue
        for node, path in _raw_conditions(
            segment.get("condition"), ("segments", index, "condition")
        ):
            reference = node.get("segment")
            if isinstance(reference, str) and reference not in names:
                line = line_of(lines, *path, "segment")
                message = f"unknown segment {reference!r}"
                found.append(Problem(line, _field_path(path) + ".segment", message))
    return found


def _cycle_errors(definition: RuleFile, lines: dict[Path, int]) -> list[Problem]:
    """Cycles of references between segments (through groups too)."""
    names = [rule.name for rule in definition.segments]
    index = {name: position for position, name in enumerate(names)}
    found = []
    before = _dependencies(definition)
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def cycle_from(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for dependency in before[name]:
            if state.get(dependency) == 1:
                return [*path[path.index(dependency) :], dependency]
            if dependency not in state and (cycle := cycle_from(dependency, [*path, dependency])):
                return cycle
        state[name] = 2
        return None

    for name in names:
        if name not in state and (cycle := cycle_from(name, [name])):
            position = index[cycle[0]]
            found.append(
                Problem(
                    lines.get(("segments", position, "condition")),
                    f"segments[{position}].condition",
                    "segments refer to each other in a cycle: " + " -> ".join(cycle),
                )
            )
            break
    return found


_ALIASES = {"all_of": "all", "any_of": "any", "not_of": "not"}
_TAGS = frozenset(
    (
        "feature",
        "trait",
        "computed",
        "property",
        "sequence",
        "after",
        "all",
        "any",
        "not",
        "event",
        "segment",
    )
)


def _is_condition_slot(path: list[str | int]) -> bool:
    """Whether the next location part is a condition (so pydantic puts a tag there)."""
    if not path:
        return False
    if path[-1] in ("condition", "not", "where"):
        return True
    return isinstance(path[-1], int) and len(path) > 1 and path[-2] in ("all", "any")


def _document_path(location: tuple[str | int, ...]) -> list[str | int]:
    """An error's location as a path in the rule file: conditions' tags and the model's
    names for `all`, `any` and `not` left out."""
    path: list[str | int] = []
    tag_expected = False
    for part in location:
        if tag_expected and part in _TAGS:
            tag_expected = False
            continue  # the discriminator's tag, not a key of the document
        path.append(_ALIASES.get(part, part) if isinstance(part, str) else part)
        tag_expected = _is_condition_slot(path)
    return path


def _located(condition: Condition, path: Path) -> Iterator[tuple[Any, Path]]:
    """`condition` and every condition nested in it, each with its path in the document."""
    yield condition, path
    if isinstance(condition, AllOf | AnyOf):
        key = "all" if isinstance(condition, AllOf) else "any"
        parts = condition.all_of if isinstance(condition, AllOf) else condition.any_of
        for index, part in enumerate(parts):
            yield from _located(part, (*path, key, index))
    elif isinstance(condition, NotOf):
        yield from _located(condition.not_of, (*path, "not"))


_KIND_OPS = {
    "a number": (*_NUMBER_OPS, *_EQUALITY_OPS, *_PRESENCE_OPS),
    "a time": (*_TIME_OPS, *_PRESENCE_OPS, "==", "!="),
    "text": (*_TEXT_OPS, *_EQUALITY_OPS, *_PRESENCE_OPS),
}


def _value_kind(trait: ComputedTrait) -> str | None:
    """What a computed trait's value is, when its aggregate says: a number, a time, text."""
    if trait.aggregate in _NUMERIC_AGGREGATES:
        return "a number"
    if trait.aggregate in ("first_time", "last_time"):
        return "a time"
    return "text" if trait.aggregate == "most_frequent" else None


def _computed_errors(definition: RuleFile, lines: dict[Path, int]) -> list[Problem]:
    """Comparisons of computed traits the file does not declare, or with an operator the
    trait's value cannot take."""
    found = []
    for position, rule in enumerate(definition.segments):
        for node, path in _located(rule.condition, ("segments", position, "condition")):
            if not isinstance(node, ComputedCondition):
                continue
            line = lines.get((*path, "computed"), lines.get(path))
            field = _field_path(path) + ".computed"
            trait = definition.computed.get(node.computed)
            if trait is None:
                found.append(Problem(line, field, f"unknown computed trait {node.computed!r}"))
                continue
            for name, _ in node.percentiles:
                named = name.removeprefix(COMPUTED_PREFIX)
                other = definition.computed.get(named)
                if other is None or _value_kind(other) != "a number":
                    what = "unknown" if other is None else f"not a number ({other.aggregate})"
                    message = f"a percentile of a numeric computed trait; {named!r} is {what}"
                    value_line = lines.get((*path, "value"), line)
                    found.append(Problem(value_line, _field_path(path) + ".value", message))
            kind = _value_kind(trait)
            if node.percentiles and kind != "a number":
                message = f"{node.computed!r} ({trait.aggregate}) is not a number: no percentile"
                found.append(Problem(line, field, message))
            if kind is not None and node.op not in _KIND_OPS[kind]:
                message = (
                    f"{node.computed!r} ({trait.aggregate}) is {kind}: {node.op} cannot "
                    f"compare it; use one of {', '.join(_KIND_OPS[kind])}"
                )
                op_line = lines.get((*path, "op"), line)
                found.append(Problem(op_line, _field_path(path) + ".op", message))
    return found


def _field_path(path: Path) -> str:
    """A document path as errors name fields: `segments[0].condition.all[1]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _in_order(found: list[Problem]) -> list[Problem]:
    """Problems by line, those without one last."""
    return sorted(found, key=lambda problem: problem.line or 1 << 30)


_SHAPE = "a rules file is a mapping with a `segments:` list (see docs/rules.md)"


def parse_rules(text: str, source: str = "rules", version: int | None = None) -> RuleSet:
    """Validate rule-file text and compile it; raise :class:`RuleFileError` on any problem."""
    document, lines = load_yaml(text, source, RuleFileError, _SHAPE)
    named = _name_errors(document, lines)
    try:
        definition = RuleFile.model_validate(document)
    except ValidationError as error:
        raise RuleFileError(
            source, _in_order(problems(error, lines, _document_path) + named)
        ) from None
    found = named or _cycle_errors(definition, lines)
    found += _computed_errors(definition, lines)
    if found:
        raise RuleFileError(source, _in_order(found))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return RuleSet(definition, digest, version, text)
