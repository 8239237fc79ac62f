import importlib.util
cuda_compiled = importlib.util.find_spec("fastfid._cuda") is not None
