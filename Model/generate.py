#!/usr/bin/env python3
"""Generates the Promela transition code of the dsm-ivy model from the protocol table the plugin
runs: the text of IvyTable.describe() (printed by Model/dump-table.swift from the compiled IvyCore
objects) becomes

  - #defines for every cache state, cache event, manager state and manager event;
  - inline cache_table(): one guarded branch per (state, event) pair: the next state and the
    actions in table order (each an inline A_<action>() written by hand in ivy.pml), or a
    protocol violation for the pairs the table declares errors;
  - inline manager_table(): the same for the manager;
  - inline check_permission(i): the access each state grants (the table's permission column)
    must be the access the host's page state gives.

It refuses a table whose actions or states ivy.pml does not model (and the reverse), so the
model cannot silently drift from the plugin: a new action or state fails the check until the
model learns it.

usage: generate.py TABLE.txt IVY.pml OUT.pml [--mutate "STATE EVENT -> NEXT: a1, a2"]...
  --mutate replaces one cache-table entry (for showing that a broken table fails the check).
"""
import re
import sys


def fail(msg):
    sys.exit("Model/generate.py: " + msg)


args = sys.argv[1:]
mutations = []
while "--mutate" in args:
    i = args.index("--mutate")
    mutations.append(args[i + 1])
    del args[i:i + 2]
if len(args) != 3:
    fail("usage: generate.py TABLE.txt IVY.pml OUT.pml [--mutate 'S E -> N: a, b']")
table_path, model_path, out_path = args
text = open(table_path).read().splitlines()
model = open(model_path).read()

section = None
states, perms, events, cache, mstates, mevents, manager = [], {}, [], {}, [], [], {}
for line in text:
    s = line.strip()
    if s.startswith("Cache controller states"):
        section = "states"; continue
    if s.startswith("Cache controller events"):
        section = "events"; continue
    if s.startswith("Cache controller transitions"):
        section = "cache"; continue
    if s.startswith("Manager transitions"):
        section = "manager"; continue
    if not s:
        continue
    if section == "states":
        name, perm = s.split()[:2]
        states.append(name); perms[name] = perm
    elif section == "events":
        events.append(s.split()[0])
    elif section in ("cache", "manager"):
        m = re.match(r"^(\S+)\s+(\S+)\s+->\s+(.*)$", s)
        if not m:
            fail("cannot read table line: %r" % line)
        st, ev, rest = m.groups()
        if rest.startswith("error:"):
            entry = ("error", rest[len("error:"):].strip())
        else:
            parts = rest.split(None, 1)
            acts = [a.strip() for a in parts[1].split(",")] if len(parts) > 1 else []
            entry = ("go", parts[0], acts)
        if section == "cache":
            cache[(st, ev)] = entry
        else:
            manager[(st, ev)] = entry
            if st not in mstates: mstates.append(st)
            if ev not in mevents: mevents.append(ev)

if not states or not events or not cache or not manager:
    fail("%s does not look like IvyTable.describe() output" % table_path)
for st in states:
    for ev in events:
        if (st, ev) not in cache:
            fail("the table has no entry for (%s, %s)" % (st, ev))

for mut in mutations:
    m = re.match(r"^\s*(\w+)\s+(\w+)\s*->\s*(\w+)\s*:?\s*(.*)$", mut)
    if not m or (m.group(1), m.group(2)) not in cache:
        fail("--mutate %r: expected 'STATE EVENT -> NEXT: action, action' naming an existing entry" % mut)
    acts = [a.strip() for a in m.group(4).split(",") if a.strip()]
    print("generate.py: MUTATED (%s, %s): %s -> %s %s" % (m.group(1), m.group(2), cache[(m.group(1), m.group(2))],
                                                         m.group(3), acts))
    cache[(m.group(1), m.group(2))] = ("go", m.group(3), acts)

# The model must implement exactly the table's actions (no more, no fewer).
used = sorted({a for e in list(cache.values()) + list(manager.values()) if e[0] == "go" for a in e[2]})
modeled = sorted(set(re.findall(r"^inline A_(\w+)\(", model, re.M)))
missing = [a for a in used if a not in modeled]
stale = [a for a in modeled if a not in used]
if missing:
    fail("the table uses actions the model does not implement (add inline A_<name>() to %s): %s"
         % (model_path, ", ".join(missing)))
if stale and not mutations:
    fail("the model implements actions the table no longer has (remove them from %s): %s" % (model_path, ", ".join(stale)))
for kind, names, prefix in (("cache state", states, "S_"), ("manager state", mstates, "MS_")):
    for ref in set(re.findall(r"\b%s(\w+)" % prefix, model)):
        if ref not in names:
            fail("%s uses %s %s%s, which the table does not have" % (model_path, kind, prefix, ref))
for kind, names, prefix in (("cache event", events, "E_"), ("manager event", mevents, "ME_")):
    for ref in set(re.findall(r"\b%s(\w+)" % prefix, model)):
        if ref not in names:
            fail("%s uses %s %s%s, which the table does not have" % (model_path, kind, prefix, ref))

out = ["/* GENERATED by Model/generate.py from IvyTable.describe() -- do not edit. */", ""]
for i, st in enumerate(states):
    out.append("#define S_%s %d" % (st, i))
for i, ev in enumerate(events):
    out.append("#define E_%s %d" % (ev, i))
for i, st in enumerate(mstates):
    out.append("#define MS_%s %d" % (st, i))
for i, ev in enumerate(mevents):
    out.append("#define ME_%s %d" % (ev, i))
out.append("")


def emit_actions(acts, indent):
    lines = []
    for a in acts:
        lines.append(indent + "if :: !abort -> A_%s() :: else -> skip fi;" % a)
    return lines


def emit_table(name, comment, rows, cols, table, guard, sets_next, violation):
    """One Promela inline choosing the transition of (state, event): an error entry prints the
    violation (`violation` % (event, state, reason)) and fails; any other entry (the cache's also
    setting nx) runs its actions."""
    out.extend(comment)
    out.append("inline %s() {" % name)
    out.append("    if")
    for st in rows:
        for ev in cols:
            e = table[(st, ev)]
            g = guard % (st, ev)
            if e[0] == "error":
                out.append(g)
                out.append('        printf("VIOLATION %s\\n", n, p);' % (violation % (ev, st, e[1].replace('"', "'"))))
                out.append("        assert(false)")
            else:
                out.append(g + (" nx = S_%s;" % e[1] if sets_next else ""))
                out.extend(emit_actions(e[2], "        "))
                out.append("        skip")
    out.append("    fi")
    out.append("}")
    out.append("")


emit_table("cache_table",
           ["/* One transition of the cache controller of node n, page p: sets nx and runs the actions",
            "   (an action may set abort: the rest is skipped and the state is kept). */"],
           states, events, cache, "    :: (cst[I(n,p)] == S_%s && evt == E_%s) ->", True,
           "node %%d gfn %%d: %s in state %s: %s")
emit_table("manager_table", ["/* One transition of the manager of page p on node n (mevt, mstate). */"],
           mstates, mevents, manager, "    :: (mstate == MS_%s && mevt == ME_%s) ->", False,
           "manager node %%d gfn %%d: %s in %s: %s")
level = {"none": 0, "read": 1, "read-write": 2}
out.append("/* The access each state grants (the table's permission column) is the host page state. */")
out.append("inline check_permission(i) {")
for st in states:
    if perms[st] not in level:
        fail("unknown permission %r of state %s" % (perms[st], st))
    out.append("    assert(cst[i] != S_%s || hst[i] == %d);" % (st, level[perms[st]]))
out.append("}")
open(out_path, "w").write("\n".join(out) + "\n")
print("generate.py: %d cache transitions, %d manager transitions, %d actions -> %s"
      % (len(cache), len(manager), len(used), out_path))
