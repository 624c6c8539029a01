"""The process kubelet: runs each bound pod's containers as local subprocesses."""

from .kubelet import Kubelet, KubeletConfig

__all__ = ["Kubelet", "KubeletConfig"]
