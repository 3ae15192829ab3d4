"""JSON and YAML documents -> the values a request may carry (pure: text in, values out).

Below settings, inputs and schema, which all read documents (the config, conversation files,
tool files, schema files): every value read passes structured.check_value's rules, and YAML
is composed under bounds (nesting, aliases, node count) so that no document can hang or
exhaust memory. JSON is tried first where a document may be either: json is ~100x faster
than composing YAML and has no node limit.
"""

from __future__ import annotations

import functools

from anyfast_cli.errors import UsageError
from anyfast_cli.structured import (
    MAX_INT_DIGITS,
    MAX_NESTING,
    JsonSyntaxError,
    ValueProblem,
    check_value,
    line_of,
    number_problem,
    parse_json,
    text_problem,
)


def load_structured(text: str, source: str):
    """YAML or JSON text (JSON is tried first: it is faster and its errors are clearer), as
    values any request may carry (structured.check_value); errors name the file and line."""
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        try:
            return parse_json(text)
        except JsonSyntaxError:
            pass  # maybe YAML flow style; let YAML judge
        except ValueProblem as exc:  # JSON, but NaN, nested too deep, …: YAML would not read it better
            raise _value_error(text, source, exc) from None
    return load_yaml(text, source, "YAML or JSON")


def load_json(text: str, source: str):
    """JSON text (a `.json` file: never read as YAML, which is far slower and bounded in
    size), as values any request may carry; errors name the file and line."""
    try:
        return parse_json(text)
    except JsonSyntaxError as exc:
        raise UsageError(f"{source}:{line_of(text, exc.pos)}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except ValueProblem as exc:
        raise _value_error(text, source, exc) from None


def _value_error(text: str, source: str, problem: ValueProblem) -> UsageError:
    line = line_of(text, problem.pos)
    return UsageError(f"{source}{f':{line}' if line else ''}: {problem.describe()}")


def load_yaml(text: str, source: str, kind: str = "YAML"):
    """Parse YAML into JSON's values; a syntax error, or a value no request may carry, becomes
    a UsageError naming `source` and the line (structured.check_value's rules, and no alias bomb)."""
    import yaml  # loaded only when there is YAML to read

    loader = _bounded_loader()(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        invalid = "" if getattr(exc, "refused", False) else f"invalid {kind}: "  # valid YAML, but not a value we take
        raise UsageError(f"{where}: {invalid}{problem}") from None
    finally:
        loader.dispose()
    try:
        check_value(data)  # what the loader cannot see by line: a key that is neither text nor a number
    except ValueProblem as exc:
        raise UsageError(f"{source}: {exc.describe()}") from None
    return data


def value_span(text: str, path: tuple) -> tuple[int, int] | None:
    """Where the value at `path` (mapping keys and list indexes) is written in a YAML or JSON
    document: its start and end character offsets, or None. For errors only (it composes the
    document again), so that they can name the line a value came from."""
    import yaml

    loader = _bounded_loader()(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    for step in path:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next((value for key, value in node.value if key.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
        else:
            node = None
        if node is None:
            return None
    return node.start_mark.index, node.end_mark.index


def dump_yaml(data) -> str:
    """A value as block-style YAML, keys in their order, text as written (not \\u-escaped)."""
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)


# Alias expansion, as Go's yaml.v3 bounds it (decode.go, allowedAliasRatio): a document may add
# through aliases up to 99% of its expanded nodes while it is small, falling to 10% past 4 million,
# so what aliases expand to stays proportional to what was written; a billion laughs stops at once.
ALIAS_FREE_NODES = 100  # expanded nodes any document may owe to aliases
ALIAS_FREE_TOTAL = 1000  # a document this small (expanded) is never refused
ALIAS_RATIO_LOW, ALIAS_RATIO_HIGH = 400_000, 4_000_000
# Values (nodes) in one YAML document. PyYAML holds some 500 bytes and 10 µs for each while it
# composes, so 16 MiB of `[1,1,1,…]` would take 4 GB; 250,000 (~130 MB, ~3 s) is some 50,000
# messages of a saved conversation (5 a message), past any context. JSON has no such cost.
MAX_YAML_NODES = 250_000


def allowed_alias_ratio(expanded: int) -> float:
    """The share of a document's expanded nodes that aliases may supply (yaml.v3's rule)."""
    if expanded <= ALIAS_RATIO_LOW:
        return 0.99
    if expanded >= ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (expanded - ALIAS_RATIO_LOW) / (ALIAS_RATIO_HIGH - ALIAS_RATIO_LOW)


@functools.lru_cache(maxsize=None)
def _bounded_loader():
    """A safe YAML loader that, while it composes (before anything is built), refuses nesting
    past MAX_NESTING, excessive or recursive aliasing, NaN and infinities, integers too long
    to read, lone surrogates, and tags beyond plain data; each with its line. Dates stay text."""
    import yaml
    from yaml.composer import ComposerError

    class Refused(ComposerError):
        refused = True

    plain_tags = {
        f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
    }

    try:  # libyaml's parser (iterative, ~100x faster) with Python composing, so that the checks below run
        from yaml.composer import Composer
        from yaml.constructor import SafeConstructor
        from yaml.cyaml import CParser
        from yaml.resolver import Resolver

        class Base(Composer, CParser, SafeConstructor, Resolver):
            def __init__(self, stream) -> None:
                CParser.__init__(self, stream)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)
    except ImportError:  # PyYAML built without libyaml
        Base = yaml.SafeLoader

    class BoundedLoader(Base):
        # An unquoted 2024-01-01 is the text the user wrote, not a date JSON cannot carry.
        yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def __init__(self, stream) -> None:
            Base.__init__(self, stream)
            self._shapes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, levels) once expanded
            self._open = 0  # lists and mappings being composed around the current node
            self._written = 0  # nodes in the text
            self._aliased = 0  # nodes that aliases add when expanded

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                node = super().compose_node(parent, index)
                shape = self._shapes.get(id(node))
                if shape is None:  # its anchor's node is still being composed: it contains itself
                    raise Refused(None, None, f"the alias *{event.anchor} is inside its own anchor", event.start_mark)
                self._aliased += shape[0]
                expanded = self._written + self._aliased
                if (
                    self._aliased > ALIAS_FREE_NODES
                    and expanded > ALIAS_FREE_TOTAL
                    and self._aliased / expanded > allowed_alias_ratio(expanded)
                ):
                    raise Refused(
                        None,
                        None,
                        f"excessive aliasing: aliases expand {self._written:,} written nodes "
                        f"to {expanded:,} (an alias bomb?)",
                        event.start_mark,
                    )
                self._check_levels(self._open + shape[1], event.start_mark)
                return node
            collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
            self._open += collection
            self._check_levels(self._open, event.start_mark)
            node = super().compose_node(parent, index)
            self._open -= collection
            if isinstance(node, yaml.ScalarNode):
                children = ()
                self._check_scalar(node)
            else:
                children = (
                    node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
                )
            if node.tag not in plain_tags:
                raise Refused(
                    None,
                    None,
                    f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed here "
                    "(only text, numbers, true/false, null, lists and mappings)",
                    node.start_mark,
                )
            shapes = [self._shapes[id(child)] for child in children]
            self._shapes[id(node)] = (
                1 + sum(s[0] for s in shapes),
                collection + max((s[1] for s in shapes), default=0),
            )
            self._written += 1
            if self._written > MAX_YAML_NODES:
                raise Refused(
                    None,
                    None,
                    f"more than {MAX_YAML_NODES:,} values in one YAML document "
                    "(write it as JSON, which has no such limit)",
                    node.start_mark,
                )
            return node

        def _check_levels(self, levels: int, mark) -> None:
            if levels > MAX_NESTING:
                raise Refused(None, None, f"nested deeper than {MAX_NESTING} levels", mark)

        def _check_scalar(self, node) -> None:
            problem = None
            try:
                if node.tag == "tag:yaml.org,2002:float":
                    problem = number_problem(self.construct_yaml_float(node))
                elif node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
                    problem = f"a number of {len(node.value):,} digits is too long"
                elif node.tag == "tag:yaml.org,2002:str":
                    problem = text_problem(node.value)
                    problem = f"the text {problem}" if problem else None
            except ValueError as exc:
                problem = f"cannot read {node.value[:40]!r}: {exc}"
            if problem:
                raise Refused(None, None, problem, node.start_mark)

    return BoundedLoader
