"""An embedded reference world: synthetic shapes scenes with GenEval-grammar prompts and an exact judge.

The tiny reference diffusion model is trained and scored on this world, so GenEval's own rules can be applied with
a detector that is exact instead of Mask2Former. Submodules import only numpy; torch is never loaded here.
"""
