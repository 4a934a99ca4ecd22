"""torch.jit.trace support (fvcore): natten's ops take ``bool[]`` arguments, which the tracer cannot
record, so each autograd Function runs its op with the tracer paused; the Function itself is recorded
as one ``prim::PythonOp`` node, and its outputs get placeholder values in the graph."""

import torch


def untraced(op, *args):
    state = torch._C._get_tracing_state()
    if state is None:
        return op(*args)
    torch._C._set_tracing_state(None)
    try:
        outs = op(*args)
    finally:
        torch._C._set_tracing_state(state)
    graph = state.graph()
    for t in outs if isinstance(outs, (tuple, list)) else (outs,):
        node = graph.insertNode(graph.create("prim::Uninitialized"))
        node.output().inferTypeFrom(t)
        torch._C._set_value_trace(t, node.output())
    return outs
