#!/usr/bin/env python3
"""Import direction inside each crate: fails when the modules of a crate import in a circle.

For every crate of the workspace (a directory with a Cargo.toml and a src/), each source file
under src/ is one module. An edge A -> B means a path written in A (a `use`, or a path in code
such as `crate::x::Y`, `super::Y`, `server::ServerView`) names an item defined in B. Paths are
resolved the way rustc does for the cases this code base uses: `crate::`, `super::`, `self::`,
`$crate::`, child modules and imported module aliases in scope; a name that a module only
re-exports (`pub use other::Y`) is followed to the module that defines it, so a facade such as
`server/mod.rs` re-exporting `ServerView` from `server/view.rs` does not itself become part of
a circle. Declaring a child (`mod x;`) is not an edge. Paths into other crates are not edges
(cargo already refuses a circle between crates).

Prints each circle (a strongly connected component of more than one module, with one cycle
through it spelled out) and exits 1 if there is any; exits 0 and prints a one-line summary
otherwise. `--edges` also prints every edge; `--crate NAME` (repeatable) restricts the check to
those crates.
No dependencies beyond Python 3's standard library.
"""

import os
import re
import sys
from collections import defaultdict

ITEM_KINDS = r"(?:struct|enum|fn|trait|type|const|static|union|mod)"
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """Removes comments, string and char literals (keeping newlines), so paths are only code."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"[A-Za-z0-9_]", text[i - 1:i] or " "):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == "b" and text.startswith('b"', i) and not re.match(r"[A-Za-z0-9_]", text[i - 1:i] or " "):
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:  # a char literal; otherwise a lifetime
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Module:
    def __init__(self, path, file, root_dir):
        self.path = path  # tuple of segments below the crate root, () for the root
        self.file = file
        self.root_dir = root_dir
        self.children = {}  # name -> Module (file modules and inline modules)
        self.parent = None
        self.defined = set()
        self.reexports = {}  # name -> absolute path (list of segments, "crate"-rooted) or None
        self.globs = []  # absolute paths of `pub use x::*`
        self.uses = []  # (absolute path, alias) of every `use`
        self.code_paths = []  # raw paths in code, relative to this module
        self.inline = False

    def name(self):
        return "crate" + "".join("::" + s for s in self.path)


def parse_use_items(code):
    """Yields (is_pub, tree_text) for each `use` item, with `as` kept readable."""
    for m in re.finditer(r"(^|[;{}\]\s])((?:pub(?:\([^)]*\))?\s+)?)use\s+([^;]+);", code):
        yield bool(m.group(2).strip()), m.group(3)


def expand_use(tree):
    """Expands a use tree into (segments, alias) pairs; alias None for globs."""
    # Protect `as` before whitespace is removed.
    tree = re.sub(r"\s+as\s+", " as ", tree)
    tree = re.sub(r"\s+", " ", tree).strip()
    out = []

    def parse(prefix, s):
        depth, parts, cur = 0, [], ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            parts.append(cur.strip())
        for part in parts:
            brace = part.find("{")
            if brace >= 0:
                head = part[:brace].replace(" ", "").rstrip(":")
                segs = [x for x in head.split("::") if x]
                parse(prefix + segs, part[brace + 1:part.rfind("}")])
                continue
            alias = None
            if " as " in part:
                part, alias = part.split(" as ", 1)
                alias = alias.strip()
            segs = [x for x in part.replace(" ", "").split("::") if x]
            if not segs:
                continue
            if segs[-1] == "*":
                out.append((prefix + segs, None))
            elif segs[-1] == "self":
                s2 = prefix + segs[:-1]
                out.append((s2, alias or s2[-1]))
            else:
                out.append((prefix + segs, alias or segs[-1]))

    parse([], tree)
    return out


class Crate:
    def __init__(self, name, dir):
        self.name = name
        self.dir = dir
        self.modules = []
        self.roots = []
        self.exported_macros = {}

    def load(self):
        src = os.path.join(self.dir, "src")
        roots = []
        for f in ("lib.rs", "main.rs"):
            if os.path.exists(os.path.join(src, f)):
                roots.append(os.path.join(src, f))
        bindir = os.path.join(src, "bin")
        if os.path.isdir(bindir):
            for f in sorted(os.listdir(bindir)):
                p = os.path.join(bindir, f)
                if f.endswith(".rs"):
                    roots.append(p)
                elif os.path.exists(os.path.join(p, "main.rs")):
                    roots.append(os.path.join(p, "main.rs"))
        for r in roots:
            root = Module((), r, os.path.dirname(r))
            self.roots.append(root)
            self.load_file(root)

    def load_file(self, mod):
        with open(mod.file, encoding="utf-8") as f:
            code = strip_code(f.read())
        self.modules.append(mod)
        base = os.path.basename(mod.file)
        if mod.path == () or base == "mod.rs":
            child_dir = os.path.dirname(mod.file)
        else:
            child_dir = os.path.join(os.path.dirname(mod.file), base[:-3])
        self.scan(mod, code, child_dir)

    def scan(self, mod, code, child_dir):
        """Scans `code` belonging to `mod`, descending into inline `mod x { ... }` blocks."""
        pos = 0
        body = []
        pat = re.compile(r"(#\[path\s*=\s*\"[^\"]*\"\]\s*)?(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
        while True:
            m = pat.search(code, pos)
            if not m:
                body.append(code[pos:])
                break
            body.append(code[pos:m.start()])
            name = m.group(2)
            if m.group(3) == ";":
                f1 = os.path.join(child_dir, name + ".rs")
                f2 = os.path.join(child_dir, name, "mod.rs")
                f = f1 if os.path.exists(f1) else f2
                child = Module(mod.path + (name,), f, child_dir)
                child.parent = mod
                mod.children[name] = child
                mod.defined.add(name)
                if os.path.exists(f):
                    self.load_file(child)
                pos = m.end()
            else:
                depth, j = 1, m.end()
                while j < len(code) and depth:
                    if code[j] == "{":
                        depth += 1
                    elif code[j] == "}":
                        depth -= 1
                    j += 1
                child = Module(mod.path + (name,), mod.file, child_dir)
                child.parent = mod
                child.inline = True
                mod.children[name] = child
                mod.defined.add(name)
                self.modules.append(child)
                self.scan(child, code[m.end():j - 1], os.path.join(child_dir, name))
                pos = j
        own = "".join(body)
        for m in re.finditer(r"\b" + ITEM_KINDS + r"\s+(" + IDENT + ")", own):
            mod.defined.add(m.group(1))
        for m in re.finditer(r"(#\[macro_export\]\s*)?macro_rules!\s*(" + IDENT + ")", own):
            mod.defined.add(m.group(2))
            if m.group(1):  # `#[macro_export]` puts the macro at the crate root
                self.exported_macros[m.group(2)] = mod
        for is_pub, tree in parse_use_items(own):
            for segs, alias in expand_use(tree):
                mod.uses.append((segs, alias, is_pub))
        code_only = re.sub(r"(^|[;{}\]\s])((?:pub(?:\([^)]*\))?\s+)?)use\s+([^;]+);", r"\1", own)
        for m in re.finditer(r"(?<![A-Za-z0-9_:])(\$?" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)", code_only):
            segs = [s.strip() for s in m.group(1).split("::")]
            mod.code_paths.append(segs)

    # --- resolution -------------------------------------------------------------------------

    def absolute(self, mod, segs):
        """A path written in `mod` -> (root module, list of segments below it), or None if it
        leaves the crate (an external crate, std, a primitive)."""
        if not segs:
            return None
        head = segs[0]
        if head in ("crate", "$crate"):
            return self.root_of(mod), segs[1:]
        cur = mod
        if head == "self":
            return mod, segs[1:]
        if head == "super":
            i = 0
            while i < len(segs) and segs[i] == "super":
                cur = cur.parent if cur.parent else cur
                i += 1
            return cur, segs[i:]
        if head in mod.children:
            return mod, segs
        alias = self.alias_of(mod, head)
        if alias is not None:
            return alias[0], alias[1] + segs[1:]
        return None

    def root_of(self, mod):
        while mod.parent:
            mod = mod.parent
        return mod

    def alias_of(self, mod, name):
        for segs, alias, _ in mod.uses:
            if alias == name:
                if segs and segs[0] == name and len(segs) == 1:
                    return None
                res = self.absolute_use(mod, segs)
                return res
        return None

    def absolute_use(self, mod, segs):
        # A `use` path is resolved like a path in code, except that its first segment may not
        # be an alias of the same use.
        if not segs:
            return None
        head = segs[0]
        if head in ("crate", "$crate", "self", "super") or head in mod.children:
            return self.absolute(mod, segs)
        return None

    def resolve(self, base, segs, seen=None, whole_ok=False):
        """Follows `segs` from module `base` to the module that defines the item. Returns that
        module, or None if the path leaves the crate or (unless `whole_ok`) names a module
        itself: naming a module (`use crate::stream::{self, ..}`) is no dependency on its file,
        the items used through the name are."""
        seen = seen or set()
        cur = base
        i = 0
        while i < len(segs) and segs[i] in cur.children:
            cur = cur.children[segs[i]]
            i += 1
        if i >= len(segs):
            return cur if whole_ok else None
        name = segs[i]
        key = (id(cur), name)
        if key in seen:
            return cur
        seen.add(key)
        if name in cur.defined and name not in cur.children:
            return cur
        if cur.parent is None and name in self.exported_macros:
            return self.exported_macros[name]
        for usegs, alias, is_pub in cur.uses:
            if alias == name:
                res = self.absolute_use(cur, usegs)
                if res is None:
                    return None  # re-export of another crate's item
                return self.resolve(res[0], res[1], seen)
        for usegs, alias, is_pub in cur.uses:
            if alias is None and is_pub:
                res = self.absolute_use(cur, usegs[:-1])
                if res is None:
                    continue
                target = self.resolve(res[0], res[1], seen, whole_ok=True)
                if target is None:
                    continue
                if name in target.defined or any(a == name for _, a, _ in target.uses):
                    return self.resolve(target, [name], seen)
        return cur

    def node(self, mod):
        """The node of a module: its file, and `file::name` for an inline `mod name { ... }`."""
        inner = []
        while mod.inline:
            inner.append(mod.path[-1])
            mod = mod.parent
        return mod.file + "".join("::" + n for n in reversed(inner))

    def edges(self):
        edges = defaultdict(set)
        for mod in self.modules:
            src = self.node(mod)
            paths = [segs for segs, alias, _ in mod.uses if segs]
            paths += mod.code_paths
            for segs in paths:
                glob = segs[-1] == "*"
                if glob:
                    segs = segs[:-1]
                res = self.absolute(mod, segs)
                if res is None:
                    continue
                # A glob import takes every item of the module: an edge to the module itself.
                target = self.resolve(res[0], res[1], whole_ok=glob)
                if target is None:
                    continue
                dst = self.node(target)
                # Within one file (a file and its inline modules, such as `mod tests`) a
                # circle does not matter to a reader: only edges between files count.
                if dst.split("::")[0] == src.split("::")[0]:
                    continue
                edges[src].add(dst)
        return edges


def sccs(nodes, edges):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def one_cycle(comp, edges):
    comp = set(comp)
    start = sorted(comp)[0]
    # BFS for the shortest path from a successor of start back to start.
    prev = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, ())):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return [start] + list(reversed(path))[1:] + [start] if path[-1] == start else list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def workspace_crates(top):
    crates = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("target", "node_modules")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            with open(os.path.join(dirpath, "Cargo.toml")) as f:
                m = re.search(r'^name\s*=\s*"([^"]+)"', f.read(), re.M)
            crates.append(Crate(m.group(1) if m else dirpath, dirpath))
    return sorted(crates, key=lambda c: c.dir)


def main():
    args = sys.argv[1:]
    show_edges = "--edges" in args
    only = {args[i + 1] for i, a in enumerate(args) if a == "--crate" and i + 1 < len(args)}
    top = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    failed = False
    total_mods = total_edges = 0
    for crate in workspace_crates(top):
        if only and crate.name not in only:
            continue
        crate.load()
        edges = crate.edges()
        files = {crate.node(m) for m in crate.modules}
        rel = lambda p: os.path.relpath(p, top)
        total_mods += len(files)
        total_edges += sum(len(v) for v in edges.values())
        if show_edges:
            for a in sorted(edges):
                for b in sorted(edges[a]):
                    print(f"{crate.name}: {rel(a)} -> {rel(b)}")
        for comp in sccs(files, edges):
            if len(comp) > 1:
                failed = True
                cycle = one_cycle(comp, edges)
                print(f"{crate.name}: import circle among {len(comp)} modules: " + ", ".join(sorted(rel(c) for c in comp)))
                print("  for example: " + " -> ".join(rel(c) for c in cycle))
    if failed:
        print("check-imports: FAILED (modules must import in one direction only; see docs/ARCHITECTURE.md)")
        return 1
    print(f"check-imports: ok ({total_mods} modules, {total_edges} edges, no circle)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
