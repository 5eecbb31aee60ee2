"""Pure parsing of teacher responses."""

from __future__ import annotations

import ast
import copy
import re

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def code_blocks(response: str) -> list[str]:
    """Fenced code blocks of a Markdown response, in order (an unclosed last fence counts)."""
    return [block.strip("\n") for block in _FENCE.findall(response or "")]


def under_heading(response: str, heading: str) -> str | None:
    """The part of a Markdown response under ``heading`` (e.g. ``### Correct Solution:``; its level and colon, and
    case, may differ): from the line after the first such heading to the next heading outside a code block (an
    answer that goes on with another example stops there), stripped. None: no such heading."""
    title = re.escape(heading.lstrip("#").strip().rstrip(":"))
    lines = (response or "").splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(rf"\s*#+\s*{title}\s*:?\s*", line, re.I)), None)
    if start is None:
        return None
    fenced, body = False, []
    for line in lines[start + 1 :]:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+\s", line):
            break
        body.append(line)
    return "\n".join(body).strip()


def python_code(response: str, cut_off: bool = False) -> str | None:
    """The first code block that parses as Python, else None. ``cut_off``: a block that does not (an answer cut
    off at ``max_tokens``) counts as its longest run of whole lines from the start that does."""
    blocks = code_blocks(response)
    for block in blocks:
        if _parses(block):
            return block
    if cut_off:
        for block in blocks:
            lines = block.splitlines()
            for end in range(len(lines) - 1, 0, -1):
                if _parses(head := "\n".join(lines[:end])):
                    return head
    return None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def normalized_source(code: str) -> str:
    """Source with formatting and comments normalised away (``ast.unparse``); raises SyntaxError."""
    return ast.unparse(ast.parse(code))


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    stub = copy.copy(node)
    stub.body, stub.decorator_list = [ast.Pass()], []
    return ast.unparse(stub).splitlines()[0].rstrip(":")


def function_specs(response: str) -> list[dict[str, str]]:
    """Function specs from a modular-decomposition answer: ``name``, ``signature``, ``description``.

    A spec is a top-level function in a code block (or in the answer, when it has none) described by its
    docstring, or, as the paper writes them, by ``# Description: ...`` comments or ``Description: ...`` lines
    under the signature. Its body (``...``, ``pass`` or real code) is dropped; a function without a
    description is not a spec. Specs repeated by name keep their first occurrence.
    """
    specs: dict[str, dict[str, str]] = {}
    for block in code_blocks(response) or [response or ""]:
        for chunk in re.split(r"^(?=(?:async\s+)?def\s)", block, flags=re.MULTILINE):
            spec = _spec(chunk)
            if spec and spec["name"] not in specs:
                specs[spec["name"]] = spec
    return list(specs.values())


_HEADER = re.compile(r"((?:async\s+)?def\s+(\w+)\s*\(.*?\)\s*(?:->\s*[^:\n]+)?):", re.DOTALL)


def _spec(chunk: str) -> dict[str, str] | None:
    """The spec of one top-level ``def`` and what follows it, or None."""
    header = _HEADER.match(chunk)
    if not header:
        return None
    try:
        node = ast.parse(chunk).body[0]
    except SyntaxError:
        node = None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if doc := ast.get_docstring(node):
            return {"name": node.name, "signature": _signature(node), "description": doc}
        name, signature = node.name, _signature(node)
        lines = [line for line in chunk[header.end() :].splitlines() if line.strip().startswith("#")]
    else:  # not Python: a signature with prose under it
        name, signature = header.group(2), " ".join(header.group(1).split())
        lines = chunk[header.end() :].splitlines()
    description = " ".join(text for line in lines if (text := _described(line)))
    return {"name": name, "signature": signature, "description": description} if description else None


def _described(line: str) -> str:
    """A description line without its comment mark, quotes and ``Description:`` label; '' for code stubs."""
    text = line.strip().lstrip("#").strip().strip("\"'").strip()
    text = re.sub(r"^description\s*:\s*", "", text, flags=re.IGNORECASE)
    return "" if text in ("...", "pass", "") else text


def defined_functions(code: str) -> list[dict[str, str]]:
    """Top-level functions of a program, each made standalone: the program's imports, then the
    top-level definitions it uses (functions, classes, assignments; transitively, in program order).

    Returns ``name``, ``signature``, ``description`` (docstring, may be empty) and ``code``.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    lines = code.splitlines()

    def source(node: ast.stmt) -> str:
        first = node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno
        return "\n".join(lines[first - 1 : node.end_lineno])

    imports = [source(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    defs: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defs[name.id] = node
    used = {id(node): {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} for node in defs.values()}
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or defs[node.name] is not node:
            continue  # not a function, or one defined again further down (the program runs the last)
        needed, frontier = {id(node)}, [node]
        while frontier:
            for name in used[id(frontier.pop())]:
                dep = defs.get(name)
                if dep is not None and id(dep) not in needed:
                    needed.add(id(dep))
                    frontier.append(dep)
        parts = [source(n) for n in tree.body if id(n) in needed]
        text = "\n\n\n".join(["\n".join(imports), *parts] if imports else parts)
        out.append(
            {
                "name": node.name,
                "signature": _signature(node),
                "description": ast.get_docstring(node) or "",
                "code": text.strip("\n") + "\n",
            }
        )
    return out


def assert_statements(response: str) -> list[str]:
    """The ``assert`` statements of a response's code blocks, each on its own (a line that does not
    parse is skipped, so one broken assert does not lose the rest)."""
    found = []
    for block in code_blocks(response):
        try:
            found += [ast.unparse(n) for n in ast.walk(ast.parse(block)) if isinstance(n, ast.Assert)]
        except SyntaxError:
            for line in block.splitlines():
                try:
                    found += [ast.unparse(n) for n in ast.parse(line.strip()).body if isinstance(n, ast.Assert)]
                except SyntaxError:
                    continue
    return found


def vacuous_test(test: str, name: str) -> str | None:
    """Why ``test`` checks nothing about function ``name`` (no assert that calls it), or None when it does. A
    test that does not parse is left to the sandbox to reject."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    if not asserts:
        return "no assert statement in the test"
    if not any(isinstance(n, ast.Name) and n.id == name for a in asserts for n in ast.walk(a)):
        return f"no assert calls {name}"
    return None
