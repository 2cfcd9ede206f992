"""The networks: SAM 2 (:mod:`~segmenter.modeling.sam2`: Hiera, FPN neck, heads, memory modules),
SAM 1 (:mod:`~segmenter.modeling.sam1`), their image transforms, and the model interface both
implement (:mod:`~segmenter.modeling.interface`), which the predictors are typed against."""
