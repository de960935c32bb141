import { ModelFormatError } from "../errors.js";
import { tensorAttribute, type OnnxFloatTensor, type OnnxGraph, type OnnxNode, type OnnxTensor } from "./read-onnx.js";

/**
 * An ONNX graph indexed for walking backwards from its output: who produces each tensor, how
 * many nodes read it, and its constant value when it has one. The walk yields the network's
 * main chain as steps, with each Concat's branches walked back to the tensor they fork from.
 */

/** One step of the network's main chain, in forward order. */
export type Step =
  | { readonly kind: "node"; readonly node: OnnxNode }
  | { readonly kind: "concat"; readonly node: OnnxNode; readonly branches: readonly (readonly Step[])[] };

/**
 * Two-input arithmetic, whose every non-constant input carries activations (other operators
 * carry them in their first input only). Narrower than the graph edits' POINTWISE_OPS
 * (model/ort/graph-edits/proto-graph.ts): input-affine.ts lets these four (and Concat) take the
 * image in any input and every other operator only in its first.
 */
export const BINARY_ARITHMETIC: ReadonlySet<string> = new Set(["Add", "Mul", "Sub", "Div"]);

export class GraphIndex {
  readonly producer = new Map<string, OnnxNode>();
  readonly consumers = new Map<string, number>();
  readonly inputName: string;

  constructor(readonly graph: OnnxGraph) {
    for (const node of graph.nodes) {
      for (const output of node.outputs) if (output) this.producer.set(output, node);
      for (const input of new Set(node.inputs)) {
        if (input) this.consumers.set(input, (this.consumers.get(input) ?? 0) + 1);
      }
    }
    const [input, ...others] = graph.inputs;
    if (!input || others.length > 0) {
      throw this.error(`expected one image input, found ${graph.inputs.length} (${graph.inputs.map((i) => i.name).join(", ")})`);
    }
    this.inputName = input.name;
  }

  error(message: string): ModelFormatError {
    return new ModelFormatError(`${this.graph.source}: ${message}`);
  }

  isConstant(tensor: string): boolean {
    return this.graph.initializers.has(tensor) || this.producer.get(tensor)?.opType === "Constant";
  }

  /** The initializer or Constant value of a tensor, or undefined when it is computed. */
  constantOf(tensor: string): OnnxTensor | undefined {
    const initializer = this.graph.initializers.get(tensor);
    if (initializer) return initializer;
    const node = this.producer.get(tensor);
    if (node?.opType !== "Constant") return undefined;
    const value = tensorAttribute(node, "value", this.graph.source);
    if (value) return value;
    const floats = node.attributes.get("value_float") ?? node.attributes.get("value_floats");
    if (floats?.type === "float") return { kind: "float", name: tensor, dims: [], data: Float32Array.of(floats.value) };
    if (floats?.type === "floats") return { kind: "float", name: tensor, dims: [floats.value.length], data: Float32Array.from(floats.value) };
    const ints = node.attributes.get("value_int") ?? node.attributes.get("value_ints");
    if (ints?.type === "int") return { kind: "int", name: tensor, dims: [], data: [ints.value] };
    if (ints?.type === "ints") return { kind: "int", name: tensor, dims: [ints.value.length], data: ints.value };
    throw this.error(`Constant node ${describeNode(node)} has no value this reader understands`);
  }

  floatConstant(tensor: string, role: string, node: OnnxNode): OnnxFloatTensor {
    const value = this.constantOf(tensor);
    if (value?.kind !== "float") {
      throw this.error(`${role} of ${describeNode(node)} must be a float initializer or Constant, found ${value ? "integers" : "a computed tensor"}`);
    }
    return value;
  }

  /** The inputs that carry activations, as opposed to weights, shapes and indices. */
  dataInputs(node: OnnxNode): string[] {
    if (node.opType === "Concat" || BINARY_ARITHMETIC.has(node.opType)) {
      return node.inputs.filter((input) => input !== "" && !this.isConstant(input));
    }
    const first = node.inputs[0];
    return first && !this.isConstant(first) ? [first] : [];
  }

  /**
   * The chain of steps that ends in `tensor`, walking backwards until `stop` says so. A Concat
   * becomes one step whose branches are walked back to the tensor they fork from (the first
   * tensor read by more than one node); all branches must fork from the same tensor.
   */
  walkBack(tensor: string, stop: (tensor: string) => boolean, budget = { steps: this.graph.nodes.length * 2 }): { steps: Step[]; start: string } {
    const steps: Step[] = [];
    let current = tensor;
    while (!stop(current)) {
      if (--budget.steps < 0) throw this.error("the graph has a cycle");
      const node = this.producer.get(current);
      if (!node) {
        throw this.error(`tensor "${current}" is read but no node produces it and it is neither the input nor an initializer`);
      }
      const inputs = this.dataInputs(node);
      if (node.opType === "Concat") {
        const walked = inputs.map((input) =>
          this.walkBack(input, (t) => t === this.inputName || (this.consumers.get(t) ?? 0) > 1, budget),
        );
        const forks = new Set(walked.map((w) => w.start));
        const [fork] = forks;
        if (fork === undefined || forks.size > 1) {
          throw this.error(`the branches of Concat ${describeNode(node)} start from ${forks.size} different tensors; an inception module's branches share one input`);
        }
        steps.push({ kind: "concat", node, branches: walked.map((w) => w.steps) });
        current = fork;
        continue;
      }
      if (inputs.length !== 1 || !inputs[0]) {
        throw this.error(`${describeNode(node)} has ${inputs.length} activation inputs; a GoogLeNet chain has exactly one per node (residual or multi-input graphs are not GoogLeNet)`);
      }
      steps.push({ kind: "node", node });
      current = inputs[0];
    }
    return { steps: steps.reverse(), start: current };
  }
}

export function describeNode(node: OnnxNode): string {
  return `${node.opType} "${node.name || node.outputs[0] || "?"}"`;
}
