import time, sys, copy, statistics, torch, torchvision
from torch.fx.experimental.optimization import fuse
torch.set_grad_enabled(False)
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
M = "models/"
def rate(fn, batch, secs=0.6):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    t=time.perf_counter(); n=0
    while time.perf_counter()-t < 0.1: fn(); n+=1
    torch.cuda.synchronize(); per=(time.perf_counter()-t)/n
    iters=max(3,int(secs/per)); out=[]
    for _ in range(2):
        t=time.perf_counter()
        for _ in range(iters): fn()
        torch.cuda.synchronize(); out.append(batch*iters/(time.perf_counter()-t))
    return max(out)
def first_calls(mod, x32):
    out=[]
    for b in [2,4,8,16,32,64,128]:
        t=time.perf_counter(); mod(x32[:b]); torch.cuda.synchronize(); out.append(round(time.perf_counter()-t,3))
    return out
x32 = torch.randn(256,3,224,224,device="cuda")
xh = x32.half().contiguous(memory_format=torch.channels_last)
base = torchvision.models.resnet50(weights=None).eval()
res = {}
def rec(name, v): res[name]=v; print(f"{name:<40} {v}", flush=True)
m = copy.deepcopy(base).cuda().half().to(memory_format=torch.channels_last)
for b in (256,1): rec(f"eager_half_cl b{b}", round(rate(lambda: m(xh[:b]), b)))
f = fuse(copy.deepcopy(base)).cuda().half().to(memory_format=torch.channels_last)
for b in (256,1): rec(f"eager_fused_half_cl b{b}", round(rate(lambda: f(xh[:b]), b)))
del m, f
def script(path, opt=True, texpr=True, name=""):
    torch._C._set_graph_executor_optimize(opt)
    torch._C._jit_set_texpr_fuser_enabled(texpr)
    s = torch.jit.load(M+path, map_location="cuda").eval()
    t=time.perf_counter(); s(x32[:1]); torch.cuda.synchronize(); firstb1=round(time.perf_counter()-t,3)
    fc = first_calls(s, x32)
    rec(f"{name} first calls b1,2..128 s", [firstb1]+fc)
    for b in (256,1): rec(f"{name} b{b}", round(rate(lambda: s(x32[:b]), b)))
script("resnet50_fp16_fused.pt", True, True, "script_fused default")
script("resnet50_fp16_fused.pt", True, False, "script_fused texpr_off")
script("resnet50_fp16_fused.pt", False, True, "script_fused optimize_off")
script("resnet50_fp16.pt", True, True, "script_plain default")
script("resnet50_fp16.pt", False, True, "script_plain optimize_off")
# channels-last half input directly into the fused scripted model (wrapper's conversion becomes a no-op)
torch._C._set_graph_executor_optimize(False)
s = torch.jit.load(M+"resnet50_fp16_fused.pt", map_location="cuda").eval()
rec("script_fused optimize_off, half CL input b256", round(rate(lambda: s(xh), 256)))
# FP32 no TF32
m = copy.deepcopy(base).cuda()
rec("eager_fp32_notf32 b256", round(rate(lambda: m(x32), 256)))
rec("eager_fp32_notf32 b1", round(rate(lambda: m(x32[:1]), 1)))
del m
for opt in (True, False):
    torch._C._set_graph_executor_optimize(opt)
    s = torch.jit.load(M+"resnet50_fp32_fused.pt", map_location="cuda").eval()
    for b in (256,1): rec(f"script_fused_fp32 opt={opt} b{b}", round(rate(lambda: s(x32[:b]), b)))
