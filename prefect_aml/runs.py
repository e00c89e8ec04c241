class Experiment: pass
class PipelineRun: pass
class Run: pass
class StepRun: pass
