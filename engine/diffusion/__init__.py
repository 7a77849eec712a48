"""The diffusers work: models, samplers, prompt conditioning, generation, hires fix, LoRAs,
infotext, and the X/Y/Z grid."""
