"""Generation: `EMOPipeline` (diffusers-style) and its input preparation.

`EMOPipeline` and `EMOPipelineOutput` are imported lazily so that `preprocessing` and `loading`
can be used without importing diffusers.
"""

__all__ = ["EMOPipeline", "EMOPipelineOutput"]


def __getattr__(name):
    if name == "EMOPipeline":
        from emoportrait.pipelines.pipeline_emo import EMOPipeline

        return EMOPipeline
    if name == "EMOPipelineOutput":
        from emoportrait.pipelines.pipeline_output import EMOPipelineOutput

        return EMOPipelineOutput
    raise AttributeError(f"module 'emoportrait.pipelines' has no attribute {name!r}")
