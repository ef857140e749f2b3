"""Bicep's deploy-time-constant rules and ARM's name-length limits, checked without a Bicep compiler.

Why: `bicep build` does not install offline, and the structural tests could not see that a template which parses
still does not compile. The rules below are transcribed from the Bicep compiler (github.com/Azure/bicep):

- src/Bicep.Core/TypeSystem/DeployTimeConstantContainerVisitor.cs: what needs a deploy-time constant (a "container"):
  a resource body property whose type has the DeployTimeConstant flag (not for `existing` resources, whose body is
  skipped), every `if` condition, every for-expression's array, and for a `var` declared as a for-expression also the
  for-body; calls to functions that require inlining.
- src/Bicep.Core/TypeSystem/Providers/Az/AzResourceTypeProvider.cs: which resource properties carry that flag:
  `name`, `scope`, `parent` (UniqueIdentifierProperties) and WriteOnlyDeployTimeConstantPropertyNames (`location`,
  `kind`, `subscriptionId`, `resourceGroup`, `managedBy`, `extendedLocation`, `zones`, `placement`, `plan`, `sku`,
  `identity`, `managedByExtended`, `tags`, `asserts`); and which properties are readable when the deployment starts:
  ReadWriteDeployTimeConstantPropertyNames = `id`, `name`, `type`, `apiVersion`.
- src/Bicep.Core/LanguageConstants.cs (CreateModuleType): a module's `name` (1-64 characters of `[-\\w._()]`, the
  Microsoft.Resources/deployments REST spec), `scope` and `identity` are deploy-time constants; of a module only
  `name` (and `scope`) is readable then, never `outputs`.
- src/Bicep.Core/TypeSystem/Providers/ResourceTypeResolver.cs: an `existing` resource whose `name`/`scope`/`parent`
  is itself a runtime value loses even `id` and `name` (CreateExistingResourceBodyTypeOverrides).
- src/Bicep.Core/TypeSystem/DeployTimeConstantDirectViolationVisitor.cs and ...IndirectViolationVisitor.cs: a
  violation is a property or string-index access to a property that is not readable at deploy time, a reference to
  a whole resource or module (allowed only as `scope`/`parent`, unless it is an existing resource with runtime
  identifiers), or a call to a function flagged RequiresInlining (src/Bicep.Core/Semantics/Namespaces/
  AzNamespaceType.cs: `reference`, `list*`, `toLogicalZone(s)`, `toPhysicalZone(s)`); variables are followed
  through their declarations (the "variable dependency chain").
- src/Bicep.Core/Diagnostics/DiagnosticBuilder.cs: the diagnostics, errors all: BCP120 (property), BCP177
  (if-condition), BCP178 (for-expression), BCP182 (for-body of a variable).

Type rules (BCP036/BCP033 into @allowed, BCP318, BCP184, name characters) are in tests/infra/bicep_types.py;
Project.violations() and main() run both.

Name lengths: ARM's per-type limits (Microsoft, "Naming rules and restrictions for Azure resources",
learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules), evaluated for the worst case: a
parameter at its @maxLength (or its longest @allowed value, or the longest value any caller passes), uniqueString()
13 characters, guid() 36, take(x, n) at most n. A name fed by anything unbounded is reported.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Node = Any  # tree_sitter.Node (imported lazily: the checker runs in .venv-infra)

# AzResourceTypeProvider.UniqueIdentifierProperties + WriteOnlyDeployTimeConstantPropertyNames.
RESOURCE_DTC_PROPERTIES = frozenset({
    "name", "scope", "parent",
    "location", "kind", "subscriptionId", "resourceGroup", "managedBy", "extendedLocation", "zones", "placement",
    "plan", "sku", "identity", "managedByExtended", "tags", "asserts",
})
# LanguageConstants.CreateModuleType: name, scope, identity carry TypePropertyFlags.DeployTimeConstant.
MODULE_DTC_PROPERTIES = frozenset({"name", "scope", "identity"})
# AzResourceTypeProvider.ReadWriteDeployTimeConstantPropertyNames (+ scope/parent: ReadableAtDeployTime flags).
RESOURCE_READABLE = frozenset({"id", "name", "type", "apiVersion", "scope", "parent"})
MODULE_READABLE = frozenset({"name", "scope"})
# AzNamespaceType.cs: FunctionFlags.RequiresInlining.
RUNTIME_FUNCTIONS = re.compile(r"^(reference|list\w*|toLogicalZones?|toPhysicalZones?)$")

# Worst-case lengths of names, per resource type (lower case). Deployments: Bicep LanguageConstants.cs (REST spec);
# the rest: Microsoft's "Naming rules and restrictions for Azure resources" (MicrosoftDocs/azure-docs
# articles/azure-resource-manager/management/resource-name-rules.md; checked there: vaults 3-24, vaults/secrets
# 1-127, sites 2-60, serverfarms 1-60, EventGrid topics 3-50, eventSubscriptions 3-64, Insights components /
# scheduledQueryRules / metricAlerts 1-260, roleAssignments / roleDefinitions a GUID). systemTopics is not on that
# page: 128 is an assumption, and main.bicep bounds systemTopicName by it.
NAME_LIMITS: dict[str, int] = {
    "microsoft.resources/deployments": 64,
    "microsoft.resources/resourcegroups": 90,
    "microsoft.storage/storageaccounts": 24,
    "microsoft.storage/storageaccounts/blobservices/containers": 63,
    "microsoft.keyvault/vaults": 24,
    "microsoft.keyvault/vaults/secrets": 127,
    "microsoft.web/sites": 60,
    "microsoft.web/serverfarms": 60,
    "microsoft.managedidentity/userassignedidentities": 128,
    "microsoft.operationalinsights/workspaces": 63,
    "microsoft.insights/components": 260,
    "microsoft.insights/scheduledqueryrules": 260,
    "microsoft.insights/metricalerts": 260,
    "microsoft.insights/diagnosticsettings": 260,
    "microsoft.insights/workbooks": 36,
    "microsoft.eventgrid/topics": 50,
    "microsoft.eventgrid/systemtopics": 128,
    "microsoft.eventgrid/systemtopics/eventsubscriptions": 64,
    "microsoft.authorization/roleassignments": 36,
    "microsoft.authorization/roledefinitions": 36,
}
DEPLOYMENT_NAME_CHARS = re.compile(r"^[-\w._()]*$")
INF = math.inf

# Values Bicep's deployment functions can take, for name lengths (subscription ids and tenant ids are GUIDs).
FUNCTION_MEMBER_LENGTHS: dict[tuple[str, str], float] = {
    ("subscription", "subscriptionId"): 36,
    ("subscription", "tenantId"): 36,
    ("tenant", "tenantId"): 36,
    ("resourceGroup", "name"): 90,
    ("resourceGroup", "location"): 20,
    ("deployment", "name"): 64,
    ("environment", "name"): len("AzureUSGovernment"),
}

RULES = {
    "BCP120": "a resource's name, location, scope, parent, tags, sku, kind, identity (and the other write-only "
              "top-level properties) and a module's name, scope and identity need values known when the deployment "
              "starts",
    "BCP177": "an if-condition needs a value known when the deployment starts",
    "BCP178": "a for-expression's array needs a value known when the deployment starts",
    "BCP182": "the for-body of a variable needs values known when the deployment starts",
    "ARM-NAME-LENGTH": "a resource or deployment name stays within ARM's limit for its type, for the longest values "
                       "the parameters allow",
    "ARM-DEPLOYMENT-NAME-CHARS": "a deployment (module) name uses only [-\\w._()]",
    "no-unused-params": "every parameter is used (Bicep linter rule; infra/bicepconfig.json makes it an error)",
    "no-unused-vars": "every variable is used (Bicep linter rule; infra/bicepconfig.json makes it an error)",
}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


@dataclass
class Param:
    node: Node
    decorators: dict[str, list[Node]] = field(default_factory=dict)


@dataclass
class Declared:
    """A resource or module declaration, with its `if` and `for` wrappers unwrapped."""

    kind: str  # "resource" | "module"
    name: str
    node: Node
    rtype: str  # resource type without api version; modules: the module path
    existing: bool
    body: Node | None
    condition: Node | None
    loop: Node | None
    loop_names: tuple[str, ...]


def _language() -> Any:
    ts = importlib.import_module("tree_sitter")
    grammar = importlib.import_module("tree_sitter_bicep")
    return ts.Language(grammar.language())


@functools.cache
def _parser() -> Any:
    ts = importlib.import_module("tree_sitter")
    return ts.Parser(_language())


def _text(node: Node) -> str:
    return str(node.text.decode("utf-8"))


def _named(node: Node) -> list[Node]:
    return [c for c in node.children if c.is_named]


def _ident(node: Node | None) -> str | None:
    return _text(node) if node is not None and node.type == "identifier" else None


def _unparen(node: Node) -> Node:
    while node.type == "parenthesized_expression":
        node = _named(node)[0]
    return node


def _string_literal(node: Node) -> str | None:
    """The value of a string without interpolation."""
    if node.type != "string":
        return None
    parts = []
    for child in node.children:
        if child.type == "string_content":
            parts.append(_text(child))
        elif child.type == "escape_sequence":
            parts.append(_text(child)[1:])
        elif child.type == "interpolation":
            return None
    return "".join(parts)


def _property_key(prop: Node) -> str | None:
    key = prop.children[0]
    return _text(key) if key.type == "identifier" else _string_literal(key)


def _object_properties(obj: Node | None) -> dict[str, Node]:
    if obj is None or obj.type != "object":
        return {}
    props: dict[str, Node] = {}
    for prop in obj.children:
        if prop.type == "object_property":
            key = _property_key(prop)
            if key is not None:
                props[key] = _named(prop)[-1]
    return props


def _loop_names(for_node: Node) -> tuple[str, ...]:
    names = []
    for child in for_node.children:
        if child.type in ("identifier", "loop_variable", "loop_enumerator") and for_node.field_name_for_child(
            for_node.children.index(child)
        ) in (None, "initializer"):
            names.append(_text(child))
        if child.type == "for_loop_parameters":
            names.extend(_text(c) for c in child.children if c.type in ("loop_variable", "loop_enumerator"))
        if child.type == "in":
            break
    return tuple(names)


def _for_parts(for_node: Node) -> tuple[Node, Node]:
    """(array expression, body) of a for_statement."""
    after_in = False
    array = body = None
    for child in for_node.children:
        if child.type == "in":
            after_in = True
            continue
        if after_in and child.is_named and array is None:
            array = child
        elif after_in and child.is_named:
            body = child
    assert array is not None and body is not None, _text(for_node)
    return array, body


class Template:
    """One .bicep file: its declarations, and the deploy-time rules evaluated on them."""

    def __init__(self, path: Path, source: bytes | None = None) -> None:
        self.path = path
        self.source = source if source is not None else path.read_bytes()
        self.root = _parser().parse(self.source).root_node
        self.params: dict[str, Param] = {}
        self.variables: dict[str, Node] = {}
        self.declared: dict[str, Declared] = {}
        self.functions: set[str] = set()
        self._collect()
        self._runtime_identified: set[str] = set()
        self._compute_existing_identifiers()

    # -- declarations ------------------------------------------------------------------------------------------

    def _collect(self) -> None:
        pending: dict[str, list[Node]] = {}
        for child in self.root.children:
            if child.type == "decorators":
                for dec in child.children:
                    call = next((c for c in dec.children if c.type == "call_expression"), None)
                    if call is not None:
                        fname = _text(call.child_by_field_name("function"))
                        args = list(_named(call.child_by_field_name("arguments")))
                        pending[fname] = args
                continue
            if child.type == "parameter_declaration":
                name = _text(_named(child)[0])
                self.params[name] = Param(child, pending)
            elif child.type == "variable_declaration":
                named = _named(child)
                self.variables[_text(named[0])] = named[-1]
            elif child.type in ("resource_declaration", "module_declaration"):
                self._declare(child)
            elif child.type == "user_defined_function":
                self.functions.add(_text(_named(child)[0]))
            pending = {}
        # resources nested in resource bodies
        for node in self._walk(self.root):
            if node.type == "resource_declaration" and node.parent is not None and node.parent.type != "infrastructure":
                self._declare(node)

    def _declare(self, node: Node) -> None:
        named = _named(node)
        name = _text(named[0])
        kind = "module" if node.type == "module_declaration" else "resource"
        rtype = _string_literal(named[1]) or ""
        rtype = rtype.split("@", 1)[0]
        existing = any(c.type == "existing" for c in node.children)
        value = named[-1]
        loop = condition = None
        loop_names: tuple[str, ...] = ()
        if value.type == "for_statement":
            loop = value
            loop_names = _loop_names(value)
            _, value = _for_parts(value)
        if value.type == "if_statement":
            condition = next(c for c in value.children if c.type == "parenthesized_expression")
            value = next(c for c in value.children if c.type == "object")
        self.declared[name] = Declared(kind, name, node, rtype, existing, value if value.type == "object" else None,
                                       condition, loop, loop_names)

    @staticmethod
    def _walk(node: Node) -> Iterator[Node]:
        stack = [node]
        while stack:
            current = stack.pop()
            yield current
            stack.extend(reversed(current.children))

    def _compute_existing_identifiers(self) -> None:
        """ResourceTypeResolver.CreateExistingResourceBodyTypeOverrides: an existing resource whose name, scope or
        parent is a runtime value has no deploy-time id or name."""
        changed = True
        while changed:
            changed = False
            for decl in self.declared.values():
                if decl.kind != "resource" or not decl.existing or decl.name in self._runtime_identified:
                    continue
                props = _object_properties(decl.body)
                for key in ("name", "scope", "parent"):
                    if key in props and self._runtime_reasons(props[key], frozenset(decl.loop_names), key):
                        self._runtime_identified.add(decl.name)
                        changed = True
                        break

    # -- deploy-time constants ---------------------------------------------------------------------------------

    def _symbol_of(self, node: Node, local: frozenset[str]) -> str | None:
        """The resource or module a symbol expression names: `foo`, or `parent::child` (a nested resource)."""
        node = _unparen(node)
        if node.type == "resource_expression":
            node = node.child_by_field_name("resource")
        name = _ident(node)
        return name if name is not None and name in self.declared and name not in local else None

    def _collection_element(self, node: Node, local: frozenset[str]) -> str | None:
        """`foos[<int>]`: one element of a resource/module collection (Bicep resolves it to the resource symbol)."""
        node = _unparen(node)
        if node.type != "subscript_expression":
            return None
        sym = self._symbol_of(node.child_by_field_name("object"), local)
        if sym is None or self.declared[sym].loop is None:
            return None
        return sym if self.possible_strings(node.child_by_field_name("index")) is None else None

    def _runtime_reasons(self, expr: Node, local: frozenset[str], container_key: str | None = None,
                         chain: tuple[str, ...] = (), anchor: Node | None = None) -> list[tuple[int, str]]:
        """Why `expr` is not known when the deployment starts, as (line, reason); empty when it is.

        A violation found through a variable is reported at the variable's use in the container (`anchor`), as
        DeployTimeConstantIndirectViolationVisitor does ("errorSyntax is always variableDependency").
        """
        reasons: list[tuple[int, str]] = []
        allow_whole = container_key in ("scope", "parent")

        def flag(at: Node, text: str) -> None:
            where = anchor if anchor is not None else at
            reasons.append((where.start_point[0] + 1, f"{' -> '.join(chain)} -> {text}" if chain else text))

        def symbol_access(sym: str, props: list[str] | None, at: Node) -> None:
            """Flag access to resource/module `sym` (`props` None: the whole symbol)."""
            decl = self.declared[sym]
            if props is None:
                if allow_whole and not (decl.kind == "resource" and sym in self._runtime_identified):
                    return
                flag(at, f"`{_text(at)}` is the whole {decl.kind} {sym}")
                return
            readable = MODULE_READABLE if decl.kind == "module" else RESOURCE_READABLE
            if decl.kind == "resource" and sym in self._runtime_identified:
                readable = frozenset({"type", "apiVersion"})
            for prop in sorted(props):
                if prop in readable:
                    continue
                if decl.kind == "module":
                    what = "only name"
                elif sym in self._runtime_identified:
                    what = "only type and apiVersion (its own name/scope/parent is a runtime value)"
                else:
                    what = "only id, name, type and apiVersion"
                flag(at, f"`{_text(at)}`: of {decl.kind} {sym} {what} are known at the start")
                return

        def accessed(obj: Node) -> str | None:
            """The resource/module whose property `obj.<p>` / `obj['p']` reads, if any."""
            return self._symbol_of(obj, local) or self._collection_element(obj, local)

        def access(obj: Node, props: list[str], at: Node) -> None:
            """`obj.<props>`: a property read, checked against what is readable at the start."""
            if obj.type == "ternary_expression":  # tree-sitter-bicep parses `c ? a : b.p` as `(c ? a : b).p`
                visit(obj.child_by_field_name("condition"))
                visit(obj.child_by_field_name("consequence"))
                access(obj.child_by_field_name("alternative"), props, at)
                return
            sym = accessed(obj)
            if sym is None:
                visit(obj)
                return
            symbol_access(sym, props, at)
            if _unparen(obj).type == "subscript_expression":
                visit(_unparen(obj).child_by_field_name("index"))

        def visit(node: Node | None) -> None:
            if node is None or node.has_error:  # a syntax error: tree-sitter's ERROR nodes are reported elsewhere
                return
            node = _unparen(node)
            t = node.type
            if t == "identifier" or t == "resource_expression":
                name = _text(node) if t == "identifier" else None
                if name is not None and (name in local or name in self.params):
                    return
                if name is not None and name in self.variables:
                    if name not in chain:
                        reasons.extend(self._runtime_reasons(self.variables[name], local, container_key,
                                                             (*chain, name), anchor if anchor is not None else node))
                    return
                sym = self._symbol_of(node, local)
                if sym is not None:
                    symbol_access(sym, None, node)
                return
            if t == "member_expression":
                access(node.child_by_field_name("object"), [_text(node.child_by_field_name("property"))], node)
                return
            if t == "subscript_expression":
                obj = node.child_by_field_name("object")
                index = node.child_by_field_name("index")
                if obj.type == "ternary_expression":  # tree-sitter-bicep's `c ? a : b[i]` (see _misparsed_ternary)
                    visit(obj.child_by_field_name("condition"))
                    visit(obj.child_by_field_name("consequence"))
                    obj = obj.child_by_field_name("alternative")
                keys = self.possible_strings(index)
                sym = accessed(obj)
                if sym is not None and keys is not None:
                    symbol_access(sym, sorted(keys), node)
                    if _unparen(obj).type == "subscript_expression":
                        visit(_unparen(obj).child_by_field_name("index"))
                    return
                direct = self._symbol_of(obj, local)
                if direct is not None:
                    if self.declared[direct].loop is not None:  # collection[i]: the whole i-th resource/module
                        symbol_access(direct, None, node)
                    else:
                        flag(node, f"`{_text(node)}`: a property of {direct} that is not known before deployment")
                    visit(index)
                    return
                visit(obj)
                visit(index)
                return
            if t == "call_expression":
                function = node.child_by_field_name("function")
                fname = _text(function) if function.type == "identifier" else _text(
                    function.child_by_field_name("property"))
                if RUNTIME_FUNCTIONS.match(fname):
                    flag(node, f"`{_text(node)}` calls {fname}(), a runtime function")
                    return
                if fname == "nameof":
                    return
                if function.type == "member_expression":
                    owner = self._symbol_of(function.child_by_field_name("object"), local)
                    if owner is not None:
                        flag(node, f"`{_text(node)}` calls a resource function at runtime")
                        return
                    if _ident(_unparen(function.child_by_field_name("object"))) not in ("sys", "az"):
                        visit(function.child_by_field_name("object"))
                for arg in _named(node.child_by_field_name("arguments")):
                    visit(arg)
                return
            if t == "lambda_expression":
                params = tuple(_text(c) for c in self._walk(node.children[0]) if c.type in ("identifier", "variable"))
                body = _named(node)[-1]
                reasons.extend(self._runtime_reasons(body, local | frozenset(params), container_key, chain, anchor))
                return
            if t == "for_statement":
                array, body = _for_parts(node)
                visit(array)
                reasons.extend(self._runtime_reasons(body, local | frozenset(_loop_names(node)), container_key,
                                                     chain, anchor))
                return
            if t == "object_property":
                visit(_named(node)[-1])
                key = node.children[0]
                if key.type != "identifier":
                    visit(key)
                return
            for child in node.children:
                if child.is_named:
                    visit(child)

        visit(expr)
        return reasons

    def possible_strings(self, expr: Node) -> set[str] | None:
        """The string values an expression can take when its type is a string literal or a union of them (how
        Bicep decides whether `res[expr]` names a property); None when it is not."""
        expr = _unparen(expr)
        if expr.type == "subscript_expression" and expr.child_by_field_name("object").type == "ternary_expression":
            # tree-sitter-bicep 1.1.0 parses `c ? a : b[i]` as `(c ? a : b)[i]` (a bare ternary as the object; a
            # parenthesized one would be kept as such): read it the way Bicep does.
            ternary = expr.child_by_field_name("object")
            left = self.possible_strings(ternary.child_by_field_name("consequence"))
            base = self.static_value(ternary.child_by_field_name("alternative"))
            index = self.static_value(expr.child_by_field_name("index"))
            right = base[index] if isinstance(base, list) and isinstance(index, int) and index < len(base) else None
            return left | {right} if left is not None and isinstance(right, str) else None
        if expr.type == "ternary_expression":
            left = self.possible_strings(expr.child_by_field_name("consequence"))
            right = self.possible_strings(expr.child_by_field_name("alternative"))
            return left | right if left is not None and right is not None else None
        value = self.static_value(expr)
        return {value} if isinstance(value, str) else None

    def _containers(self) -> Iterator[tuple[str, Node, frozenset[str], str | None, str]]:
        """(rule, expression, local names, property key, description) for every deploy-time-constant container."""
        for decl in self.declared.values():
            local = frozenset(decl.loop_names)
            if decl.loop is not None:
                array, _ = _for_parts(decl.loop)
                yield "BCP178", array, frozenset(), None, f"the for-expression of {decl.kind} {decl.name}"
            if decl.condition is not None:
                yield "BCP177", decl.condition, local, None, f"the if-condition of {decl.kind} {decl.name}"
            if decl.kind == "resource" and decl.existing:
                continue  # DeployTimeConstantContainerVisitor skips existing resources' properties
            wanted = MODULE_DTC_PROPERTIES if decl.kind == "module" else RESOURCE_DTC_PROPERTIES
            for key, value in _object_properties(decl.body).items():
                if key in wanted:
                    target = "module" if decl.kind == "module" else f"\"{decl.rtype}\""
                    yield "BCP120", value, local, key, f"the \"{key}\" property of {target} {decl.name}"
        # every other for-expression: variables (array and body), outputs, property values
        owned = {id(d.loop) for d in self.declared.values() if d.loop is not None}
        for node in self._walk(self.root):
            if node.type != "for_statement" or id(node) in owned:
                continue
            array, body = _for_parts(node)
            local = self._enclosing_loop_names(node)
            yield "BCP178", array, local, None, "a for-expression"
            if node.parent is not None and node.parent.type == "variable_declaration":
                yield "BCP182", body, local | frozenset(_loop_names(node)), None, (
                    f"the for-body of variable {_text(_named(node.parent)[0])}")

    def _enclosing_loop_names(self, node: Node) -> frozenset[str]:
        names: set[str] = set()
        parent = node.parent
        while parent is not None:
            if parent.type == "for_statement":
                names.update(_loop_names(parent))
            parent = parent.parent
        return frozenset(names)

    def unused_violations(self) -> list[Violation]:
        """Bicep's no-unused-params / no-unused-vars linter rules (src/Bicep.Core/Analyzers/Linter/Rules)."""
        used: set[str] = set()
        for node in self._walk(self.root):
            if node.type != "identifier" or node.parent is None:
                continue
            parent = node.parent
            if parent.type == "object_property" and parent.children[0] == node:
                continue  # a property key
            if parent.type in ("parameter_declaration", "variable_declaration") and _named(parent)[0] == node:
                continue  # the declaration itself
            used.add(_text(node))
        found = []
        for name, param in self.params.items():
            if name not in used:
                found.append(Violation(self.path, param.node.start_point[0] + 1, "no-unused-params",
                                       f"parameter {name} is declared but never used"))
        for name, expr in self.variables.items():
            if name not in used:
                found.append(Violation(self.path, expr.parent.start_point[0] + 1, "no-unused-vars",
                                       f"variable {name} is declared but never used"))
        return found

    def deploy_time_violations(self) -> list[Violation]:
        found = []
        for rule, expr, local, key, where in self._containers():
            for line, reason in self._runtime_reasons(expr, local, key):
                found.append(Violation(self.path, line, rule,
                                       f"{where} needs a value known when the deployment starts; {reason}"))
        return found

    # -- static values and worst-case lengths ------------------------------------------------------------------

    def static_value(self, expr: Node, seen: tuple[str, ...] = ()) -> Any:
        """The compile-time value of literals, loadJsonContent/loadTextContent and variables built from them."""
        expr = _unparen(expr)
        t = expr.type
        if t == "string" and _string_literal(expr) is not None:
            return _string_literal(expr)
        if t == "number":
            return int(_text(expr))
        if t == "identifier" and _text(expr) in self.variables and _text(expr) not in seen:
            return self.static_value(self.variables[_text(expr)], (*seen, _text(expr)))
        if t == "call_expression":
            fname = _text(expr.child_by_field_name("function"))
            args = _named(expr.child_by_field_name("arguments"))
            if fname in ("loadJsonContent", "loadTextContent") and args and _string_literal(args[0]):
                target = self.path.parent / str(_string_literal(args[0]))
                content = target.read_text(encoding="utf-8")
                return json.loads(content) if fname == "loadJsonContent" else content
        if t == "string":  # interpolation of static parts ('${'id'}', 'i${dStr}')
            parts = []
            for child in expr.children:
                if child.type == "string_content":
                    parts.append(_text(child))
                elif child.type == "escape_sequence":
                    parts.append(_text(child)[1:])
                elif child.type == "interpolation":
                    inner = self.static_value(_named(child)[0], seen)
                    if not isinstance(inner, (str, int)):
                        return None
                    parts.append(str(inner))
            return "".join(parts)
        if t == "array":
            items = [self.static_value(c, seen) for c in _named(expr)]
            return None if any(i is None for i in items) else items
        if t == "call_expression" and _text(expr.child_by_field_name("function")) in ("first", "last"):
            args = _named(expr.child_by_field_name("arguments"))
            sequence = self.static_value(args[0], seen) if len(args) == 1 else None
            if isinstance(sequence, list) and sequence:
                return sequence[0] if _text(expr.child_by_field_name("function")) == "first" else sequence[-1]
            return None
        if t == "subscript_expression":
            base = self.static_value(expr.child_by_field_name("object"), seen)
            index = self.static_value(expr.child_by_field_name("index"), seen)
            if isinstance(base, list) and isinstance(index, int) and 0 <= index < len(base):
                return base[index]
            if isinstance(base, dict) and isinstance(index, str):
                return base.get(index)
            return None
        if t == "member_expression":
            base = self.static_value(expr.child_by_field_name("object"), seen)
            if isinstance(base, dict):
                return base.get(_text(expr.child_by_field_name("property")))
        return None

    def worst_length(self, expr: Node, param_bounds: dict[str, float], local: frozenset[str] = frozenset(),
                     seen: tuple[str, ...] = ()) -> float:
        expr = _unparen(expr)
        t = expr.type
        static = self.static_value(expr)
        if isinstance(static, str):
            return len(static)
        if t == "string":
            total: float = 0
            for child in expr.children:
                if child.type == "string_content":
                    total += len(_text(child))
                elif child.type == "escape_sequence":
                    total += 1
                elif child.type == "interpolation":
                    total += self.worst_length(_named(child)[0], param_bounds, local, seen)
            return total
        if t == "number":
            return len(_text(expr))
        if t == "identifier":
            name = _text(expr)
            if name in local:
                return INF
            if name in self.params:
                return param_bounds.get(name, INF)
            if name in self.variables and name not in seen:
                return self.worst_length(self.variables[name], param_bounds, local, (*seen, name))
            return INF
        if t == "ternary_expression":
            return max(self.worst_length(expr.child_by_field_name("consequence"), param_bounds, local, seen),
                       self.worst_length(expr.child_by_field_name("alternative"), param_bounds, local, seen))
        if t == "call_expression":
            fname = _text(expr.child_by_field_name("function"))
            args = _named(expr.child_by_field_name("arguments"))
            if fname == "uniqueString":
                return 13
            if fname == "guid":
                return 36
            if fname in ("toLower", "toUpper", "trim") and args:
                return self.worst_length(args[0], param_bounds, local, seen)
            if fname == "take" and len(args) == 2 and args[1].type == "number":
                return min(int(_text(args[1])), self.worst_length(args[0], param_bounds, local, seen))
            if fname == "substring" and len(args) == 3 and args[2].type == "number":
                return int(_text(args[2]))
            if fname == "concat":
                return sum(self.worst_length(a, param_bounds, local, seen) for a in args)
            if fname == "string" and args:
                return 20
            return INF
        if t == "member_expression":
            obj = _unparen(expr.child_by_field_name("object"))
            prop = _text(expr.child_by_field_name("property"))
            if obj.type == "call_expression":
                fname = _text(obj.child_by_field_name("function"))
                if (fname, prop) in FUNCTION_MEMBER_LENGTHS:
                    return FUNCTION_MEMBER_LENGTHS[(fname, prop)]
            sym = _ident(obj)
            if sym is not None and sym in self.declared and prop == "name":
                decl = self.declared[sym]
                name_expr = _object_properties(decl.body).get("name")
                if name_expr is not None:
                    return self.worst_length(name_expr, param_bounds, frozenset(decl.loop_names), seen)
            if obj.type == "member_expression":  # environment().suffixes.x
                inner = _unparen(obj.child_by_field_name("object"))
                if inner.type == "call_expression" and _text(inner.child_by_field_name("function")) == "environment":
                    return 40
            return INF
        return INF

    def own_param_bounds(self) -> dict[str, float]:
        bounds: dict[str, float] = {}
        for name, param in self.params.items():
            limit = INF
            if param.decorators.get("maxLength"):
                limit = int(_text(param.decorators["maxLength"][0]))
            allowed = param.decorators.get("allowed")
            if allowed:
                values = [self.static_value(v) for v in self._walk(allowed[0]) if v.type == "string"]
                if values and all(isinstance(v, str) for v in values):
                    limit = min(limit, max(len(v) for v in values))
            bounds[name] = limit
        return bounds


@dataclass
class Project:
    """Every template under a folder, with module parameters bounded by what their callers pass."""

    templates: dict[Path, Template]

    @classmethod
    def load(cls, folder: Path) -> Project:
        return cls({p.resolve(): Template(p) for p in sorted(folder.rglob("*.bicep"))})

    @functools.cached_property
    def param_bounds(self) -> dict[Path, dict[str, float]]:
        bounds = {path: t.own_param_bounds() for path, t in self.templates.items()}
        callers: dict[Path, list[tuple[Template, Declared]]] = {}
        for template in self.templates.values():
            for decl in template.declared.values():
                if decl.kind == "module":
                    target = (template.path.parent / decl.rtype).resolve()
                    callers.setdefault(target, []).append((template, decl))
        # A module parameter is bounded by its @maxLength and by the longest value a caller passes. Callers first:
        # iterate to a fixed point (the module tree here is shallow).
        for _ in range(len(self.templates)):
            for target, calls in callers.items():
                if target not in self.templates:
                    continue
                callee = self.templates[target]
                for name in callee.params:
                    own = callee.own_param_bounds()[name]
                    passed: float = 0
                    for caller, decl in calls:
                        params = _object_properties(_object_properties(decl.body).get("params"))
                        if name in params:
                            passed = max(passed, caller.worst_length(params[name], bounds[caller.path.resolve()],
                                                                     frozenset(decl.loop_names)))
                        else:
                            default = callee.params[name].node
                            named = _named(default)
                            passed = max(passed, callee.worst_length(named[-1], {}) if len(named) > 2 else INF)
                    bounds[target][name] = min(own, passed)
        return bounds

    def name_violations(self) -> list[Violation]:
        found = []
        for path, template in self.templates.items():
            bounds = self.param_bounds[path]
            for decl in template.declared.values():
                if decl.kind == "resource" and decl.existing:
                    continue
                name_expr = _object_properties(decl.body).get("name")
                if name_expr is None:
                    continue
                rtype = "microsoft.resources/deployments" if decl.kind == "module" else decl.rtype.lower()
                limit = NAME_LIMITS.get(rtype)
                line = name_expr.start_point[0] + 1
                if decl.kind == "module":
                    for child in template._walk(name_expr):
                        literal = _text(child) if child.type == "string_content" else ""
                        if literal and not DEPLOYMENT_NAME_CHARS.match(literal):
                            found.append(Violation(template.path, line, "ARM-DEPLOYMENT-NAME-CHARS",
                                                   f"module {decl.name}: deployment names allow only [-\\w._()], "
                                                   f"not {literal!r}"))
                if limit is None:
                    continue
                worst = template.worst_length(name_expr, bounds, frozenset(decl.loop_names))
                if worst > limit:
                    shown = "unbounded" if worst == INF else f"up to {int(worst)} characters"
                    what = "deployment" if decl.kind == "module" else decl.rtype
                    found.append(Violation(template.path, line, "ARM-NAME-LENGTH",
                                           f"{decl.kind} {decl.name}: the {what} name `{_text(name_expr)}` is "
                                           f"{shown}; ARM allows {limit}"))
        return found

    def violations(self) -> list[Violation]:
        from tests.infra import bicep_types  # the type rules build on this module's parse helpers

        found = [v for t in self.templates.values() for v in t.deploy_time_violations()]
        found += [v for t in self.templates.values() for v in t.unused_violations()]
        return found + self.name_violations() + bicep_types.violations(self.templates)


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else Path("infra")
    from tests.infra import bicep_types

    project = Project.load(folder)
    for rule, text in {**RULES, **bicep_types.RULES}.items():
        print(f"  rule {rule}: {text}")
    problems = project.violations()
    for problem in problems:
        print(problem)
    print(f"deploy-time rules: {len(project.templates)} templates, {len(problems)} violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
