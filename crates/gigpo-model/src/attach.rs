//! Ops whose value is computed without a graph and whose backward step is a closure.
//!
//! candle's backward keeps every intermediate of an op alive and computes a gradient for every
//! input, trainable or not. An attached op records one node with its inputs only: the value is
//! computed on detached tensors (chunked where that bounds memory) and the closure recomputes
//! what it needs. The forward copies the value once into the node (CPU, f32).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

/// Gradients of the inputs given (detached inputs, which of them need one, incoming gradient);
/// `None` for an input that needs none.
pub(crate) type Grads<const N: usize> = [Option<Tensor>; N];

type Bwd<const N: usize> =
    Box<dyn Fn(&[Tensor; N], [bool; N], &Tensor) -> candle_core::Result<Grads<N>> + Send + Sync>;

struct Attached<const N: usize> {
    name: &'static str,
    value: Tensor,
    bwd: Bwd<N>,
}

impl<const N: usize> Attached<N> {
    fn value_storage(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = self.value.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(v), self.value.shape().clone()))
    }

    /// The backward closure on the detached `inputs` and incoming gradient `g`; an input that
    /// is not tracked gets no gradient.
    fn grads(&self, inputs: [&Tensor; N], g: &Tensor) -> candle_core::Result<Grads<N>> {
        let need = inputs.map(Tensor::track_op);
        let mut grads = (self.bwd)(&inputs.map(Tensor::detach), need, &g.detach())?;
        for (grad, need) in grads.iter_mut().zip(need) {
            if !need {
                *grad = None;
            }
        }
        Ok(grads)
    }
}

impl CustomOp2 for Attached<2> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.value_storage()
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let [ga, gb] = self.grads([a, b], g)?;
        Ok((ga, gb))
    }
}

impl CustomOp3 for Attached<3> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.value_storage()
    }

    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [ga, gb, gc] = self.grads([a, b, c], g)?;
        Ok((ga, gb, gc))
    }
}

/// `value` (computed from `a`, `b` without a graph) as a node of the graph of `a` and `b`,
/// whose backward step is `bwd`. Without any tracked input `value` is returned as it is.
pub(crate) fn attach2(
    name: &'static str,
    value: Tensor,
    (a, b): (&Tensor, &Tensor),
    bwd: impl Fn(&[Tensor; 2], [bool; 2], &Tensor) -> candle_core::Result<Grads<2>>
        + Send
        + Sync
        + 'static,
) -> candle_core::Result<Tensor> {
    if !(a.track_op() || b.track_op()) {
        return Ok(value);
    }
    let op = Attached::<2> {
        name,
        value,
        bwd: Box::new(bwd),
    };
    a.apply_op2(b, op)
}

/// [`attach2`] with three inputs.
pub(crate) fn attach3(
    name: &'static str,
    value: Tensor,
    (a, b, c): (&Tensor, &Tensor, &Tensor),
    bwd: impl Fn(&[Tensor; 3], [bool; 3], &Tensor) -> candle_core::Result<Grads<3>>
        + Send
        + Sync
        + 'static,
) -> candle_core::Result<Tensor> {
    if !(a.track_op() || b.track_op() || c.track_op()) {
        return Ok(value);
    }
    let op = Attached::<3> {
        name,
        value,
        bwd: Box::new(bwd),
    };
    a.apply_op3(b, c, op)
}
