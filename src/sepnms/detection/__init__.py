"""MAttNet's Mask R-CNN res101 (C4) at test time, on modern PyTorch, and its detection rules."""
