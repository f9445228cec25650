"""The Jetson sample app: edgetrim ONNX artifacts on TensorRT / CUDA / CPU through the torch-free runtime."""
