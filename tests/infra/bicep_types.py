"""Bicep's type rules this template depends on, checked without a Bicep compiler (tests/infra/deploytime.py runs
them with its deploy-time rules).

Why: the deploy-time checker models which values are known when a deployment starts, not whether a value's *type*
is assignable where it goes, so a template it passed still failed `bicep build` (a function result passed to an
`@allowed` module parameter). Each rule below is transcribed from the source it names:

- BCP036 / BCP033, a non-literal string into an `@allowed` parameter. `@allowed([...])` turns the parameter's type
  into the union of its literal values (Azure/bicep src/Bicep.Core/Syntax/ParameterDeclarationSyntax.cs,
  GetAssignedType / UnionIfLiterals); a plain `string` is assignable to a string literal type only when it carries
  AllowLooseAssignment (src/Bicep.Core/TypeSystem/TypeValidator.cs, AreTypesAssignable `(StringType,
  StringLiteralType)`), which only a parameter declared *without* `@allowed` has (DeclaredTypeManager.cs,
  ApplyTypeModifyingDecorators(allowLooseAssignment: true); LanguageConstants.LooseString). Function results are
  declared `string` (e.g. `environment().name`, src/Bicep.Core/Semantics/Namespaces/AzNamespaceType.cs,
  GetEnvironmentReturnType); an interpolated string is `string` unless every part folds to a literal
  (TypeAssignmentVisitor.cs, VisitStringSyntax); a module output is its declared type. The mismatch is an error
  (TypeValidator.ShouldWarn: only types flagged WarnOnTypeMismatch, i.e. resource properties, warn): BCP036 on a
  module's `params` property, BCP033 on a parameter default (TypeAssignmentVisitor.ValidateDefaultValue).
- BCP318, a conditional module or resource read without `.?` or `!`: TypeAssignmentVisitor.GetNamedPropertyType /
  IsPotentiallyDisabledResourceOrModule (a module whose `if` condition is not the literal `true`) and
  IsResourceInfoProperty (of a module only `name`, of a resource `id`, `name`, `type`, `apiVersion`:
  src/Bicep.Core/Emit/EmitConstants.cs ResourceInfoProperties are safe). A warning in Bicep, and a deployment that
  fails at the start when the condition is false; this checker fails on it.
- NAME-CHARS, the name pattern Bicep validates a resource's `name` against (the resource type's `name` property in
  Azure/bicep-types-az generated/<provider>/<version>/types.json, from the REST specs; modules: Bicep's own
  LanguageConstants.cs CreateModuleType). Checked for the characters a template puts into a name itself: literals,
  `uniqueString()` (13 characters of [a-z0-9], Azure/bicep-types ARM function docs) and `toLower()`. A parameter
  passed through verbatim cannot be constrained by a pattern in Bicep (it has no `@pattern` decorator) and is left
  to ARM.
- BCP184, a file loaded at compile time over Bicep's limit: loadTextContent reads at most
  LanguageConstants.MaxLiteralCharacterLimit = 131,072 characters, loadJsonContent MaxJsonFileCharacterLimit =
  1,048,576 (src/Bicep.Core/Semantics/Namespaces/SystemNamespaceType.cs, TryLoadTextContentFromFile;
  src/Bicep.Core/SourceGraph/AuxiliaryFile.cs FileExceedsMaximumSize). infra/registry.json goes through both.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.infra.deploytime import (
    Declared,
    Node,
    Template,
    Violation,
    _ident,
    _named,
    _object_properties,
    _text,
    _unparen,
)

RULES = {
    "BCP036": "a module parameter with @allowed gets a literal, a union of literals or a parameter without @allowed; "
              "not a function result, an interpolation of non-literals or a module output "
              "(ParameterDeclarationSyntax.cs, TypeValidator.cs)",
    "BCP033": "a parameter default with @allowed is a literal or a parameter without @allowed, as above",
    "BCP318": "an output of a conditional module, or a property other than id/name/type/apiVersion of a conditional "
              "resource, is read with `.?` or through `!` (TypeAssignmentVisitor.cs)",
    "BCP184": "a file read by loadTextContent has at most 131,072 characters, by loadJsonContent 1,048,576 "
              "(LanguageConstants.cs MaxLiteralCharacterLimit / MaxJsonFileCharacterLimit)",
    "NAME-CHARS": "the characters a template puts into a Key Vault, secret, storage account or resource group "
                  "name (deployment names: ARM-DEPLOYMENT-NAME-CHARS, the same pattern) match the type's name pattern (bicep-types-az types.json; Bicep "
                  "LanguageConstants.cs for deployments)",
}

# name patterns of the resource types' `name` property, as Bicep validates them (bicep-types-az generated types):
#   microsoft.keyvault/2023-07-01 vaults ^[a-zA-Z0-9-]{3,24}$, vaults/secrets ^[a-zA-Z0-9-]{1,127}$;
#   microsoft.storage/2023-05-01 storageAccounts ^[a-z0-9]+$ (3-24);
#   microsoft.resources/2024-03-01 resourceGroups ^[-\w\._\(\)]+$ (1-90);
#   modules: LanguageConstants.cs CreateModuleType ^[-\w._()]+$ (1-64), the deployments REST spec.
_WORD = set(string.ascii_letters + string.digits + "_")
NAME_CHARS: dict[str, tuple[str, frozenset[str]]] = {
    "microsoft.keyvault/vaults": ("^[a-zA-Z0-9-]{3,24}$", frozenset(string.ascii_letters + string.digits + "-")),
    "microsoft.keyvault/vaults/secrets": ("^[a-zA-Z0-9-]{1,127}$",
                                          frozenset(string.ascii_letters + string.digits + "-")),
    "microsoft.storage/storageaccounts": ("^[a-z0-9]+$", frozenset(string.ascii_lowercase + string.digits)),
    "microsoft.resources/resourcegroups": (r"^[-\w\._\(\)]+$", frozenset(_WORD | set("-._()"))),
    "microsoft.resources/deployments": (r"^[-\w._()]+$", frozenset(_WORD | set("-._()"))),
}
LOAD_LIMITS = {"loadTextContent": 131072, "loadJsonContent": 1048576}  # LanguageConstants.cs
UNIQUE_STRING_CHARS = frozenset(string.ascii_lowercase + string.digits)
# Functions whose result type is `any` (assignable anywhere) rather than `string`.
ANY_FUNCTIONS = frozenset({"any"})


@dataclass(frozen=True)
class Kind:
    """The part of an expression's Bicep type that decides assignability to a literal union."""

    literals: frozenset[Any] | None = None  # a literal or a union of literals
    loose: bool = False  # a parameter declared without @allowed
    plain: str | None = None  # why it is a plain `string` (not assignable to a literal type)


UNKNOWN = Kind()


def allowed_values(template: Template, name: str) -> frozenset[Any] | None:
    """The literal values of parameter `name`'s @allowed decorator, if it has one made of literals."""
    param = template.params.get(name)
    if param is None or not param.decorators.get("allowed"):
        return None
    array = _unparen(param.decorators["allowed"][0])
    values = [template.static_value(item) for item in _named(array)]
    if not values or any(v is None or isinstance(v, (list, dict)) for v in values):
        return None
    return frozenset(values)


def kinds(template: Template, expr: Node, local: frozenset[str], seen: tuple[str, ...] = ()) -> list[Kind]:
    """The members of an expression's type, as far as assignability to an @allowed parameter goes."""
    expr = _unparen(expr)
    t = expr.type
    if t == "ternary_expression":
        return (kinds(template, expr.child_by_field_name("consequence"), local, seen)
                + kinds(template, expr.child_by_field_name("alternative"), local, seen))
    static = template.static_value(expr)
    if isinstance(static, (str, int, bool)):
        return [Kind(literals=frozenset({static}))]
    if t in ("boolean", "true", "false"):
        return [Kind(literals=frozenset({_text(expr) == "true"}))]
    if t == "identifier":
        name = _text(expr)
        if name in local:
            return [UNKNOWN]
        if name in template.params:
            values = allowed_values(template, name)
            return [Kind(literals=values)] if values is not None else [Kind(loose=True)]
        if name in template.variables and name not in seen:
            return kinds(template, template.variables[name], local, (*seen, name))
        return [UNKNOWN]
    if t == "string":
        return [Kind(plain=f"`{_text(expr)}` interpolates values that are not literals: its type is string")]
    if t == "call_expression":
        function = expr.child_by_field_name("function")
        fname = _text(function) if function.type == "identifier" else _text(function.child_by_field_name("property"))
        if fname in ANY_FUNCTIONS or fname in template.functions:
            return [UNKNOWN]
        return [Kind(plain=f"`{_text(expr)}` is the result of {fname}(), typed string")]
    if t == "member_expression":
        obj = _unparen(expr.child_by_field_name("object"))
        while obj.type == "member_expression":
            obj = _unparen(obj.child_by_field_name("object"))
        if obj.type == "call_expression":
            return [Kind(plain=f"`{_text(expr)}` is a property of a function result, typed string")]
        sym = _ident(obj)
        if sym is not None and sym in template.declared and template.declared[sym].kind == "module":
            return [Kind(plain=f"`{_text(expr)}` is a module output, typed by its declaration (string)")]
    return [UNKNOWN]


def _mismatch(template: Template, expr: Node, allowed: frozenset[Any], local: frozenset[str]) -> str | None:
    for kind in kinds(template, expr, local):
        if kind.plain is not None:
            return kind.plain
        if kind.literals is not None and not kind.literals <= allowed:
            extra = sorted(str(v) for v in kind.literals - allowed)
            return f"`{_text(expr)}` can be {', '.join(extra)}, which @allowed does not list"
    return None


def allowed_violations(templates: dict[Any, Template]) -> Iterator[Violation]:
    """BCP036 (module params) and BCP033 (parameter defaults) for @allowed parameters."""
    for template in templates.values():
        for name, param in template.params.items():
            allowed = allowed_values(template, name)
            named = _named(param.node)
            if allowed is None or len(named) < 3:
                continue
            default = named[-1]
            reason = _mismatch(template, default, allowed, frozenset())
            if reason is not None:
                yield Violation(template.path, default.start_point[0] + 1, "BCP033",
                                f"the default of parameter {name} (@allowed {sorted(map(str, allowed))}): {reason}")
        for decl in template.declared.values():
            if decl.kind != "module":
                continue
            callee = templates.get((template.path.parent / decl.rtype).resolve())
            if callee is None:
                continue
            for key, value in _object_properties(_object_properties(decl.body).get("params")).items():
                allowed = allowed_values(callee, key)
                if allowed is None:
                    continue
                reason = _mismatch(template, value, allowed, frozenset(decl.loop_names))
                if reason is not None:
                    yield Violation(template.path, value.start_point[0] + 1, "BCP036",
                                    f"module {decl.name}: parameter {key} of {decl.rtype} has @allowed "
                                    f"{sorted(map(str, allowed))}; {reason}")


def _conditional(decl: Declared) -> bool:
    if decl.condition is None:
        return False
    inner = _unparen(decl.condition)
    return not (inner.type in ("boolean", "true") and _text(inner) == "true")


def _asserted(node: Node) -> bool:
    return any(c.type == "!" for c in node.children)


def _safe(node: Node) -> bool:
    return any(c.type == ".?" for c in node.children)


def null_access_violations(template: Template) -> Iterator[Violation]:
    """BCP318: `mod.outputs...` / `res.properties...` of a conditional declaration without `.?` or `!`."""
    for node in template._walk(template.root):
        if node.type != "member_expression":
            continue
        obj = node.child_by_field_name("object")
        base = obj
        if base.type == "subscript_expression":  # mod[i].outputs of a conditional collection
            base = base.child_by_field_name("object")
        sym = _ident(base)
        if sym is None or sym not in template.declared:
            continue
        decl = template.declared[sym]
        if not _conditional(decl) or _safe(node) or _asserted(node):
            continue
        prop = _text(node.child_by_field_name("property"))
        info = {"name"} if decl.kind == "module" else {"id", "name", "type", "apiVersion"}
        if prop in info:
            continue
        yield Violation(template.path, node.start_point[0] + 1, "BCP318",
                        f"`{_text(node)}`: {decl.kind} {sym} is conditional, so its {prop} may be null; "
                        f"read it as `{sym}.?{prop}` or `{sym}!.{prop}`")


def name_characters(template: Template, expr: Node, local: frozenset[str],
                    seen: tuple[str, ...] = ()) -> set[str]:
    """Characters the template itself can put into a name (parameters passed verbatim contribute none)."""
    expr = _unparen(expr)
    static = template.static_value(expr)
    if isinstance(static, str):
        return set(static)
    t = expr.type
    if t == "string":
        chars: set[str] = set()
        for child in expr.children:
            if child.type == "string_content":
                chars |= set(_text(child))
            elif child.type == "escape_sequence":
                chars |= set(_text(child)[1:])
            elif child.type == "interpolation":
                chars |= name_characters(template, _named(child)[0], local, seen)
        return chars
    if t == "ternary_expression":
        return (name_characters(template, expr.child_by_field_name("consequence"), local, seen)
                | name_characters(template, expr.child_by_field_name("alternative"), local, seen))
    if t == "identifier":
        name = _text(expr)
        if name in template.variables and name not in seen and name not in local:
            return name_characters(template, template.variables[name], local, (*seen, name))
        if name in template.params:
            values = allowed_values(template, name)
            return {c for v in values for c in str(v)} if values else set()
        return set()
    if t == "call_expression":
        fname = _text(expr.child_by_field_name("function"))
        args = _named(expr.child_by_field_name("arguments"))
        if fname == "uniqueString":
            return set(UNIQUE_STRING_CHARS)
        if fname == "toLower" and args:
            return {c.lower() for c in name_characters(template, args[0], local, seen)}
        if fname == "toUpper" and args:
            return {c.upper() for c in name_characters(template, args[0], local, seen)}
        if fname in ("take", "substring", "trim") and args:
            return name_characters(template, args[0], local, seen)
        if fname == "guid":
            return set(string.hexdigits.lower() + "-")
        if fname == "format" or fname == "concat":
            return {c for a in args for c in name_characters(template, a, local, seen)}
        return set()
    if t == "member_expression":
        obj = _unparen(expr.child_by_field_name("object"))
        sym = _ident(obj)
        if sym is not None and sym in template.declared and _text(expr.child_by_field_name("property")) == "name":
            decl = template.declared[sym]
            name_expr = _object_properties(decl.body).get("name")
            if name_expr is not None:
                return name_characters(template, name_expr, frozenset(decl.loop_names), seen)
    return set()


def name_character_violations(template: Template) -> Iterator[Violation]:
    for decl in template.declared.values():
        if decl.kind == "module" or decl.existing:
            continue  # module names: deploytime.py's ARM-DEPLOYMENT-NAME-CHARS, the same pattern
        rtype = decl.rtype.lower()
        if rtype not in NAME_CHARS:
            continue
        name_expr = _object_properties(decl.body).get("name")
        if name_expr is None:
            continue
        pattern, allowed = NAME_CHARS[rtype]
        bad = sorted(name_characters(template, name_expr, frozenset(decl.loop_names)) - allowed)
        if bad:
            yield Violation(template.path, name_expr.start_point[0] + 1, "NAME-CHARS",
                            f"{decl.kind} {decl.name}: the {decl.rtype} name `{_text(name_expr)}` can contain "
                            f"{''.join(bad)!r}; Bicep validates it against {pattern}")


def load_limit_violations(template: Template) -> Iterator[Violation]:
    """BCP184: the characters of a file read at compile time, against the loading function's limit."""
    for node in template._walk(template.root):
        if node.type != "call_expression":
            continue
        fname = _text(node.child_by_field_name("function"))
        args = _named(node.child_by_field_name("arguments"))
        if fname not in LOAD_LIMITS or not args:
            continue
        target = template.static_value(args[0])
        if not isinstance(target, str):
            continue
        path = template.path.parent / target
        size = len(path.read_text(encoding="utf-8")) if path.is_file() else 0
        if size > LOAD_LIMITS[fname]:
            yield Violation(template.path, node.start_point[0] + 1, "BCP184",
                            f"{fname}('{target}'): the file has {size} characters; Bicep reads at most "
                            f"{LOAD_LIMITS[fname]}")


def violations(templates: dict[Any, Template]) -> list[Violation]:
    found = list(allowed_violations(templates))
    for template in templates.values():
        found += load_limit_violations(template)
        found += null_access_violations(template)
        found += name_character_violations(template)
    return found

