"""Your own optimizer, fused: per-element rules declared by users.

A rule is the per-element math of an update, written as a plain Python
function of scalars: the param, the gradient, the state values, then the
step's scalars; it returns the new param and the new state values::

    @fastopt.rule(state=("m",), hyper={"lr": 1e-3, "beta": 0.9})
    def signum(p, g, m, lr, beta):
        m = beta * m + (1 - beta) * g
        return p - lr * sign(m), m

`rule` turns it into what a built-in optimizer is: a `fastopt.spec.Spec`
(hyperparameters with their checks, state slots with their names, the
step's host scalars) and a kernel rule registered beside the built-in ones
(`kernels.rules.USER_RULES`), compiled into the same CPU loop and CUDA
kernel, with the same shared transforms (weight decay, maximize, grad_scale,
clip_value, the moving average). What it returns is the functional function
made from that spec (`fastopt.functional._make`, single arrays or lists),
with the spec's other front ends attached: ``signum.torch(params, ...)`` (a
`torch.optim.Optimizer`), ``signum.keras(...)`` (a Keras-style optimizer),
``signum.check()`` (typing and PTX, see below).

What the rule is checked for, and how the traps are made safe:

* Its signature: after the param and the gradient come the `state` names, in
  order, then the step's scalars, each a hyperparameter or a name the
  `scalars` function makes. Checked at declaration, the message naming the
  argument.
* Its returns: a literal tuple of the wrong length is refused at
  declaration; any other return's type when the rule is first compiled.
* Numbers written in the rule (``1 - beta``, ``0.5 * g``) are typed to the
  arrays' dtype: the rule's source is rewritten so that each literal is a
  kernel scalar the host passes, cast once per call like every other scalar
  (an int exponent, ``x ** 2``, stays an int: float32 ** int is float32).
  Anything else that computes in float64 in a float32 kernel (``math.pi``,
  a NumPy float64, a helper of the user's with a literal) is reported when
  the rule is first compiled (`check_types`), with the line.
* The kernels' cache key includes a hash of the rule's rewritten source (and
  of the functions and numbers it reads from its module), so an edited rule
  takes another name and another key: a fresh process recompiles it instead
  of loading the old code. A rule re-declared in the same process (a
  notebook cell run again) is a new rule with new kernels, too.
* ``check()`` also compiles the rule's CUDA kernels to PTX (numba-cuda's
  ``compile_ptx``, no GPU needed) and reads them: no local memory, no
  arithmetic in float64 in the float32 kernels. A rule the GPU cannot compile
  (``np.sign``, which numba-cuda lacks) says so there, on the CPU machine.

Helpers (`sign`) that need constants get them the same way, as kernel
scalars typed to the arrays' dtype.
"""
import ast
import builtins
import hashlib
import inspect
import keyword
import math
import re
import textwrap
import types

import numba

from . import functional as _functional
from .functional import _make as _functional_make
from .kernels import NUM_SLOTS, PRE, rules as _rules, variant as _variant
from .kernels.variants import FINGERPRINT
from .spec import REQUIRED, SHARED, Front, Hyper, Slot, Spec

__all__ = ["rule", "sign", "Hyper", "RuleError"]


class RuleError(ValueError):
    """A rule that fastopt cannot compile as declared; the message names the
    rule and the problem."""


# -- helpers a rule may call ---------------------------------------------------
def _sign(x, one, zero):
    """np.sign(x) in x's dtype: 1, −1, 0 (for ±0) or NaN."""
    if x > zero:
        return one
    if x < zero:
        return -one
    return x * zero


sign = _rules.rule(_sign)
sign.__doc__ = """``sign(x)`` in a rule: 1, −1, 0 or NaN (NumPy's sign), in the
arrays' dtype. (NumPy's own ``np.sign`` does not compile for the GPU.)"""
# helper -> (its plain-Python twin, the constants it takes after its own arguments)
_HELPERS = {id(sign): ("sign", sign, _sign, (1.0, 0.0))}


# -- the declaration -------------------------------------------------------------
_SHARED_NAMES = frozenset(h.name for h in SHARED)
_RESERVED = frozenset(["param", "grad", "step", "convention", "ema"])


def rule(state=(), hyper=("lr",), scalars=None, *, name=None, doc=None):
    """Declare the decorated function an optimizer's per-element rule.

    state: the names of its state arrays (at most 3), which follow ``p, g``
        in its arguments and its returns, in this order; each starts at zeros.
    hyper: its hyperparameters: names (then required), a dict of name ->
        default, or `Hyper`s (for bounds: ``Hyper("beta", 0.9, high=1.0)``);
        it must have ``lr`` (the decoupled weight decay multiplies it).
    scalars: optional, ``scalars(step, lr, ...) -> dict``: the step's host
        scalars (bias corrections, schedules), computed in float64 on the
        host each call. It may take ``step``, ``convention`` and any
        hyperparameter; the dict gives each of the rule's scalar arguments
        that is not a hyperparameter (and may override one that is).
    name: the optimizer's name in messages and front ends (default: the
        function's).

    Returns the functional function (see the module docstring).
    """
    def declare(fn):
        return _declare(fn, state, hyper, scalars, name or fn.__name__, doc)
    return declare


def _declare(fn, state, hyper, scalars, name, doc):
    label = f"rule {name}"
    state = _names(label, "state", state)
    if len(state) > NUM_SLOTS:
        raise RuleError(f"{label}: {len(state)} state arrays ({', '.join(state)}); "
                        f"a rule has at most {NUM_SLOTS}")
    hypers = _hypers(label, hyper)
    hyper_names = [h.name for h in hypers]
    if "lr" not in hyper_names:
        raise RuleError(f"{label}: hyper must include 'lr' (the learning rate, which "
                        "decoupled weight decay multiplies)")
    for h in hyper_names:
        if h in _SHARED_NAMES:
            raise RuleError(f"{label}: {h!r} is an option every optimizer has "
                            "(weight decay, maximize, grad_scale, clip_value, "
                            "ema_momentum are applied around the rule); name it otherwise")
        if h in state:
            raise RuleError(f"{label}: {h!r} is both a state array and a hyperparameter")
    for n in (*hyper_names, *state):
        if n in _RESERVED:
            raise RuleError(f"{label}: {n!r} is an argument of every optimizer's function "
                            f"({', '.join(sorted(_RESERVED))}); name it otherwise")
    taken = _arguments(fn, label, state, hyper_names, scalars)
    made = _scalar_names(label, scalars, hyper_names)
    source, tree, glb = _source(fn, label)
    constants, helpers = _rewrite(tree, glb, label)
    _check_returns(tree, label, state)
    const_names = [f"_fastopt_k{i}" for i in range(len(constants))]
    tree.body[0].args.args += [ast.arg(arg=k) for k in const_names]
    ast.fix_missing_locations(tree)
    rewritten = ast.unparse(tree)
    fingerprint = _fingerprint(rewritten, fn, glb, state, taken, constants)
    kernel_name = f"{_identifier(name)}_{fingerprint}"

    user = _compile(tree, fn, glb, helpers, python=False)
    user_py = _compile(tree, fn, glb, helpers, python=True)
    adapter_jit = _adapter(kernel_name, user, state, taken + const_names)
    adapter_py = _adapter(kernel_name, user_py, state, taken + const_names)
    checked = {}

    def validate():
        if "types" not in checked:
            checked["types"] = check_types(user.py_func, label, len(taken) + len(const_names),
                                           state, rewritten, fn)

    spec_rule = _rules.RuleSpec(
        hyper=tuple(taken + const_names), slots=tuple((s, None) for s in state),
        fn=_rules.rule(adapter_jit), python=adapter_py, fingerprint=fingerprint,
        label=label, validate=validate)
    _rules.register(kernel_name, spec_rule)

    host = _host_scalars(label, scalars, taken, hyper_names, made, constants)
    cls = name[:1].upper() + name[1:]
    spec = Spec(
        name=name,
        doc=doc or (fn.__doc__ or f"One in-place {name} step (a user's rule)."),
        hypers=tuple(hypers),
        slots=tuple(Slot(s, keras=s, torch=s) for s in state),
        plan=lambda h, convention: (kernel_name, ()),
        scalars=host,
        keras=Front(cls, _signature(hypers, keras=True)),
        torch=Front(cls, _signature(hypers, keras=False)
                    + ", weight_decay=0.0, *, maximize=False, decoupled_weight_decay=False"),
    )
    step_default = None if "step" in made["takes"] else 1
    function = _functional_make.make(spec, step_default=step_default,
                                     module=getattr(fn, "__module__", None))
    _functional.register(spec, function)
    function.spec = spec
    function.kernel_rule = kernel_name
    function.rule = fn
    function.source = rewritten
    function.variant = _variant(kernel_name)
    function.torch = _front_factory(spec, "torch")
    function.keras = _front_factory(spec, "keras")
    function.keras3 = _front_factory(spec, "keras3")
    function.check = lambda ptx=True: check(function, ptx=ptx)
    return function


def _names(label, what, names):
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    for n in names:
        if not isinstance(n, str) or not n.isidentifier() or keyword.iskeyword(n):
            raise RuleError(f"{label}: {what} names must be identifiers, got {n!r}")
    if len(set(names)) != len(names):
        raise RuleError(f"{label}: {what} names repeat: {names}")
    return names


def _hypers(label, hyper):
    if isinstance(hyper, (str, Hyper)):
        hyper = (hyper,)
    items = hyper.items() if isinstance(hyper, dict) else [
        (h.name, h) if isinstance(h, Hyper) else (h, REQUIRED) for h in hyper]
    out = []
    for n, default in items:
        _names(label, "hyper", (n,))
        if isinstance(default, Hyper):
            out.append(default)
        elif n == "lr":    # a learning rate is >= 0, as every optimizer's
            out.append(Hyper(n, default))
        else:
            out.append(Hyper(n, default, low=None))
    _names(label, "hyper", [h.name for h in out])
    return out


def _arguments(fn, label, state, hyper_names, scalars):
    """The rule's scalar arguments (after p, g and the state), checked."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise RuleError(f"{label}: a rule must be a Python function") from None
    params = list(sig.parameters.values())
    shown = f"{fn.__name__}({', '.join(p.name for p in params)})"
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or \
                p.default is not p.empty:
            raise RuleError(f"{label}: {shown}: every argument must be plain positional "
                            f"(no defaults, *args or keywords): {p.name!r}")
    names = [p.name for p in params]
    if len(names) < 2 + len(state):
        raise RuleError(f"{label}: {shown} must take the param, the gradient, then its "
                        f"state ({', '.join(state) or 'none'}), then its scalars")
    for k, s in enumerate(state):
        if names[2 + k] != s:
            raise RuleError(
                f"{label}: {shown}: argument {3 + k} is {names[2 + k]!r}, but state "
                f"{s!r} must be there (after p and g come the state arrays, in the "
                f"order state={tuple(state)!r} gives)")
    taken = names[2 + len(state):]
    for n in taken:
        if n in state:
            raise RuleError(f"{label}: {shown}: state {n!r} appears twice")
        if n not in hyper_names and scalars is None:
            raise RuleError(
                f"{label}: {shown} takes {n!r}, which is neither a state array "
                f"(state={tuple(state)!r}) nor a hyperparameter "
                f"(hyper={tuple(hyper_names)!r}), and no scalars function makes it")
    return taken


def _scalar_names(label, scalars, hyper_names):
    if scalars is None:
        return {"takes": ()}
    if not callable(scalars):
        raise RuleError(f"{label}: scalars must be a function of the step and "
                        f"hyperparameters, got {scalars!r}")
    params = inspect.signature(scalars).parameters
    takes = tuple(params)
    for n, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise RuleError(f"{label}: scalars function {scalars.__name__} takes *{n}; "
                            "name what it uses: step, convention, hyperparameters")
        if n not in ("step", "convention") and n not in hyper_names:
            raise RuleError(f"{label}: scalars function {scalars.__name__} takes {n!r}, "
                            f"which is not step, convention or a hyperparameter "
                            f"({', '.join(hyper_names)})")
    return {"takes": takes}


def _source(fn, label):
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        raise RuleError(f"{label}: its source cannot be read (a rule must be defined "
                        "in a file or a notebook cell, not built by exec)") from None
    tree = ast.parse(text)
    if not tree.body or not isinstance(tree.body[0], ast.FunctionDef):
        raise RuleError(f"{label}: a rule must be a def statement")
    node = tree.body[0]
    node.decorator_list = []
    tree.body = [node]
    ast.increment_lineno(tree, fn.__code__.co_firstlineno - 1)
    glb = dict(fn.__globals__)
    if fn.__closure__:    # closed-over values, frozen as Numba freezes globals
        glb.update(zip(fn.__code__.co_freevars,
                       [c.cell_contents for c in fn.__closure__]))
    return text, tree, glb


class _Literals(ast.NodeTransformer):
    """Every number in the rule becomes a name (a kernel scalar), except an
    int exponent and an index; calls to fastopt's helpers get their constants
    appended and their name bound (`_HELPERS`)."""

    def __init__(self, glb):
        self.glb = glb
        self.constants = []
        self.helpers = {}

    def name_of(self, value):
        value = float(value)
        for i, c in enumerate(self.constants):
            if c == value and math.copysign(1, c) == math.copysign(1, value):
                return f"_fastopt_k{i}"
        self.constants.append(value)
        return f"_fastopt_k{len(self.constants) - 1}"

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            if not math.isfinite(node.value):
                return node
            return ast.copy_location(ast.Name(self.name_of(node.value), ast.Load()), node)
        return node

    def visit_BinOp(self, node):
        if isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant) \
                and type(node.right.value) is int:
            node.left = self.visit(node.left)
            return node
        return self.generic_visit(node)

    def visit_Subscript(self, node):
        node.value = self.visit(node.value)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        helper = _HELPERS.get(id(_resolve(node.func, self.glb)))
        if helper is not None:
            name, jitted, python, constants = helper
            node.func = ast.copy_location(ast.Name(f"_fastopt_{name}", ast.Load()), node.func)
            node.args += [ast.Name(self.name_of(c), ast.Load()) for c in constants]
            self.helpers[f"_fastopt_{name}"] = (jitted, python)
        return node


def _resolve(node, glb):
    if isinstance(node, ast.Name):
        return glb.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, glb)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _rewrite(tree, glb, label):
    for node in ast.walk(tree.body[0]):
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom,
                             ast.Await, ast.Lambda, ast.FunctionDef)) \
                and node is not tree.body[0]:
            raise RuleError(f"{label}: line {node.lineno}: a rule is one plain function "
                            f"of scalars ({type(node).__name__} is not allowed)")
    walker = _Literals(glb)
    tree.body[0] = walker.visit(tree.body[0])
    ast.fix_missing_locations(tree)
    return walker.constants, walker.helpers


def _check_returns(tree, label, state):
    want = 1 + len(state)
    form = f"({', '.join(['p', *state])})" if state else "p alone"
    returns = [n for n in ast.walk(tree.body[0]) if isinstance(n, ast.Return)]
    if not returns:
        raise RuleError(f"{label}: it returns nothing; it must return {form}")
    for r in returns:
        if r.value is None:
            raise RuleError(f"{label}: line {r.lineno}: a bare return; it must return {form}")
        if isinstance(r.value, ast.Tuple):
            got = len(r.value.elts)
            if not state or got != want:
                raise RuleError(
                    f"{label}: line {r.lineno} returns {got} values; it must return "
                    f"{form}: the new param{', then each state value' if state else ''}")
        elif state and isinstance(r.value, (ast.BinOp, ast.UnaryOp, ast.IfExp)):
            # one number; a name or a call is known once typed (`check_types`)
            raise RuleError(f"{label}: line {r.lineno} returns one value; it must "
                            f"return {form}: the new param, then each state value")


def _fingerprint(rewritten, fn, glb, state, taken, constants):
    """A hash of what the compiled rule is made of: its rewritten source, its
    layout, and the functions and numbers it reads from its globals (their
    source, their repr), one level deep."""
    digest = hashlib.sha256()
    digest.update(repr((rewritten, state, taken, constants)).encode())
    for n in sorted(set(fn.__code__.co_names)):
        obj = glb.get(n)
        target = getattr(obj, "py_func", obj)
        if isinstance(target, types.FunctionType):
            try:
                digest.update(n.encode() + inspect.getsource(target).encode())
            except (OSError, TypeError):
                digest.update(n.encode() + target.__code__.co_code)
        elif isinstance(obj, (int, float, complex, str, bytes, tuple)):
            digest.update(n.encode() + repr(obj).encode())
    return digest.hexdigest()[:12]


def _identifier(name):
    text = re.sub(r"\W", "_", name)
    return text if text[:1].isalpha() else f"r_{text}"


def _compile(tree, fn, glb, helpers, python):
    """The rewritten rule as a function: plain Python, or jitted inline."""
    scope = dict(glb)
    for n, (jitted, py) in helpers.items():
        scope[n] = py if python else jitted
    filename = inspect.getsourcefile(fn) or "<rule>"
    exec(compile(tree, filename, "exec"), scope)   # noqa: S102 - the user's own rule
    out = scope[tree.body[0].name]
    return out if python else _rules.rule(out)


def _adapter(kernel_name, user, state, scalars):
    """The rule in the kernels' calling form, ``(p, g, s, h, f) -> (p, s)``."""
    k = len(state)
    used = [f"s{i}" for i in range(k)]
    unpack = ", ".join(scalars) + ("," if len(scalars) == 1 else "")
    target = ", ".join(["p", *used]) if k else "p"
    call = ", ".join(["p", "g", *used, *scalars])
    source = (f"def {kernel_name}(p, g, s, h, f):\n"
              f"    s0, s1, s2 = s\n"
              + (f"    {unpack} = h\n" if scalars else "")
              + f"    {target} = _user({call})\n"
              f"    return p, (s0, s1, s2)\n")
    scope = {"_user": user}
    exec(source, scope)   # noqa: S102 - built from the declaration above
    return scope[kernel_name]


def _host_scalars(label, scalars, taken, hyper_names, made, constants):
    """`Spec.scalars`: the kernel's scalars in the rule's order, then the
    rule's constants, as Python floats."""
    consts = tuple(constants)
    if scalars is None:
        body = ", ".join(f"_f(h.{n})" for n in taken)
        source = f"def scalars(h, convention, step):\n    return ({body}{',' if taken else ''}) + _c\n"
        scope = {"_f": float, "_c": consts}
        exec(source, scope)   # noqa: S102
        return scope["scalars"]
    takes = made["takes"]
    args = ", ".join(f"{n}={'step' if n == 'step' else 'convention' if n == 'convention' else 'h.' + n}"
                     for n in takes)
    own = [n for n in taken if n not in hyper_names]
    expected = frozenset(own)
    allowed = frozenset(taken)
    fast = ", ".join(f"_f(r[{n!r}])" if n in expected else f"_f(h.{n})" for n in taken)
    fn_name = getattr(scalars, "__name__", "scalars")

    def slow(r, h):
        if not isinstance(r, dict):
            raise RuleError(f"{label}: {fn_name}() must return a dict of the rule's "
                            f"scalars ({', '.join(own)}), got {type(r).__name__}")
        extra = sorted(set(r) - allowed)
        if extra:
            raise RuleError(f"{label}: {fn_name}() returned {', '.join(map(repr, extra))}, "
                            f"which the rule does not take (it takes {', '.join(taken)})")
        missing = sorted(expected - set(r))
        if missing:
            raise RuleError(f"{label}: {fn_name}() did not return "
                            f"{', '.join(map(repr, missing))}, which the rule takes")
        return tuple(float(r[n]) if n in r else float(getattr(h, n)) for n in taken) + consts

    source = (f"def host(h, convention, step):\n"
              f"    r = _user({args})\n"
              f"    if type(r) is dict and r.keys() == _expected:\n"
              f"        return ({fast}{',' if taken else ''}) + _c\n"
              f"    return _slow(r, h)\n")
    scope = {"_user": scalars, "_expected": expected, "_f": float, "_c": consts,
             "_slow": slow}
    exec(source, scope)   # noqa: S102
    return scope["host"]


def _signature(hypers, keras):
    """A front end's constructor arguments: required hyperparameters first."""
    parts = []
    for h in sorted(hypers, key=lambda h: h.default is not REQUIRED):
        n = "learning_rate" if keras and h.name == "lr" else h.name
        parts.append(n if h.default is REQUIRED else f"{n}={h.default!r}")
    return ", ".join(parts)


def _front_factory(spec, which):
    made = {}

    def build(*args, **kwargs):
        cls = made.get("cls")
        if cls is None:
            if which == "torch":
                from .torch._make import make
            elif which == "keras3":   # a keras.optimizers.Optimizer (Keras's torch backend)
                from .keras import _fused

                def make(spec):
                    return _fused.make(spec, _fused.rule_base(spec))
            else:
                from .optimizers._make import make
            cls = made["cls"] = make(spec)
        return cls(*args, **kwargs)

    build.__name__ = f"{spec.name}.{which}"
    kind = {"torch": "torch.optim.Optimizer", "keras": "Keras-style optimizer",
            "keras3": "keras.optimizers.Optimizer (fastopt.keras, torch backend)"}[which]
    build.__doc__ = (f"A {kind}"
                     f" running the rule {spec.name}: arguments "
                     f"``{(spec.torch if which == 'torch' else spec.keras).signature}``.")
    return build


# -- checks ---------------------------------------------------------------------
def check_types(user_py, label, nscalars, state, rewritten, fn):
    """Compile the rule alone for float32 and float64 scalars (on the CPU) and
    refuse what would not run as declared: code Numba cannot compile as
    scalar code, a return of the wrong shape, float64 values in the float32
    kernel (named by line)."""
    from numba.core import ir
    from numba.core import types as nt

    nargs = 2 + len(state) + nscalars
    want = 1 + len(state)
    for dtype in (nt.float32, nt.float64):
        disp = numba.njit(user_py)
        try:
            disp.compile((dtype,) * nargs)
        except Exception as e:   # noqa: BLE001 - Numba's typing or lowering, reported
            first = str(e).strip().splitlines()
            detail = "; ".join(line.strip() for line in first[:3] if line.strip())
            raise RuleError(f"{label}: does not compile as a function of {dtype} scalars "
                            f"(Numba: {detail})") from None
        cres = disp.overloads[(dtype,) * nargs]
        ret = cres.signature.return_type
        items = list(ret) if isinstance(ret, nt.BaseTuple) else [ret]
        if (len(items) != want if state else isinstance(ret, nt.BaseTuple)):
            raise RuleError(f"{label}: returns {len(items)} value(s) ({ret}); it must return "
                            + (f"({', '.join(['p', *state])})" if state else "p alone"))
        for item in items:
            if not isinstance(item, nt.Float):
                raise RuleError(f"{label}: returns {ret}; each returned value must be a "
                                "float of the arrays' dtype")
        if dtype == nt.float32:
            typemap = cres.type_annotation.typemap
            blocks = cres.type_annotation.blocks
            lines = inspect.getsourcelines(fn)
            for block in blocks.values():
                for inst in block.body:
                    if isinstance(inst, ir.Assign) and typemap.get(inst.target.name) in \
                            (nt.float64, nt.complex128):
                        line = inst.loc.line
                        text = lines[0][line - lines[1]].strip() \
                            if 0 <= line - lines[1] < len(lines[0]) else ""
                        raise RuleError(
                            f"{label}: line {line} computes in float64 in the float32 "
                            f"kernel ({text!r}); numbers written in the rule are typed "
                            "to the arrays' dtype, but this value is not (a float64 "
                            "global, math.pi, np.float64, a helper's literal): pass it "
                            "as a hyperparameter or scalar")
    return True


def check(function, ptx=True):
    """Check `function`'s rule (a `rule`'s result): typing on the CPU
    (`check_types`), and with ``ptx=True`` its CUDA kernels, single and list
    form, float32 and float64, compiled to sm_90 PTX and read: no local
    memory, no float64 in the float32 kernels. Raises RuleError naming the
    problem; returns the PTX facts per (kernel, dtype)."""
    spec = _rules.USER_RULES[function.kernel_rule]
    spec.validate()
    if not ptx:
        return {}
    return ptx_facts(function.variant)


_F64 = re.compile(r"\b(?:add|sub|mul|mad|fma|div|rcp|sqrt|rsqrt|ex2|lg2|sin|cos|tanh"
                  r"|min|max|neg|cvt|ld|st)(?:\.\w+)*\.f64\b")


def ptx_facts(which):
    """Compile `which`'s (a Variant) CUDA kernels to PTX and read them (needs
    numba-cuda's cu12/cu13 extra, not a GPU; not under the simulator)."""
    if numba.config.ENABLE_CUDASIM:
        raise RuntimeError("a PTX check compiles for the real CUDA target: run it in a "
                           "process without NUMBA_ENABLE_CUDASIM")
    from numba import cuda
    from numba.core import types as nt

    from .kernels import cuda as kcuda, multi_cuda

    label = which.spec.label
    facts = {}
    for form, kernel_function, arrays in (
            ("single", kcuda.kernel_function,
             lambda dt: (nt.UniTuple(nt.int64, 2 + NUM_SLOTS), nt.int64)),
            ("list", multi_cuda.kernel_function,
             lambda dt: (nt.int64[:, ::1], nt.int64[:, ::1]))):
        for dt in (nt.float32, nt.float64):
            sig = (*arrays(dt), nt.UniTuple(dt, len(PRE)),
                   nt.UniTuple(dt, len(which.spec.hyper)))
            try:
                text, _ = cuda.compile_ptx(kernel_function(which), sig, cc=(9, 0))
            except Exception as e:   # noqa: BLE001 - any compile failure, reported
                lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
                raise RuleError(f"{label}: does not compile for the GPU "
                                f"({type(e).__name__}: {'; '.join(lines[:3])})") from None
            bits = str(dt)[-2:]
            rec = {"local": ".local" in text,
                   "float64_in_float32": dt == nt.float32 and bool(_F64.search(text)),
                   # 64-bit element offsets: the widened thread index (single)
                   # or the int64 chunk start plus it (list)
                   "wide_index": bool(re.search(r"mul\.wide" if form == "single"
                                                else r"shl\.b64|mul\.wide", text)),
                   "loads": len(re.findall(rf"ld\.global(?:\.nc)?\.f{bits}", text)),
                   "stores": text.count(f"st.global.f{bits}")}
            if rec["local"]:
                raise RuleError(f"{label}: its {form} CUDA kernel ({dt}) uses local "
                                "memory (a spill or a stack array)")
            if rec["float64_in_float32"]:
                raise RuleError(f"{label}: its {form} CUDA kernel computes in float64 "
                                "in float32")
            facts[(form, str(dt))] = rec
    return facts
