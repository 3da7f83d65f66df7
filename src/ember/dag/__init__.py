"""``ember.dag``: Ray's DAG API: calls bound lazily with ``.bind()``, run with ``.execute()``.

    with InputNode() as inp:
        dag = combine.bind(double.bind(inp), Model.bind(2).forward.bind(inp))
    ember.get(dag.execute(3))

Each node kind has its module: ``dag_node`` (the base and the walk that runs a
graph), ``function_node``, ``class_node`` (actors and method calls),
``input_node``, ``output_node``; ``arguments`` finds the nodes nested in bound
arguments. ``compiled_dag`` gives Ray's compiled-graph API
(``experimental_compile``), executed as the same task graph.
"""
from .class_node import (IS_CLASS_METHOD_OUTPUT_KEY, PARENT_CLASS_NODE_KEY,
                         PREV_CLASS_METHOD_CALL_KEY, ClassMethodNode, ClassNode)
from .compiled_dag import CompiledDAG
from .dag_node import DAGNode
from .function_node import FunctionNode
from .input_node import DAGInputData, InputAttributeNode, InputNode
from .output_node import MultiOutputNode

__all__ = ["DAGNode", "CompiledDAG", "FunctionNode", "ClassNode", "ClassMethodNode", "InputNode",
           "InputAttributeNode", "DAGInputData", "MultiOutputNode", "PARENT_CLASS_NODE_KEY",
           "PREV_CLASS_METHOD_CALL_KEY", "IS_CLASS_METHOD_OUTPUT_KEY"]
