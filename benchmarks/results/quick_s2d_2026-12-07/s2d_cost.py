import time
import torch
import torch.nn as nn
import torch.nn.functional as F
from cifar_fast.models.fastnet import FastNet
torch.set_num_threads(2)
def make(widths, stride):
    m = FastNet(10, widths)
    if stride == 2:
        old = m.whiten
        m.whiten = nn.Conv2d(3, old.out_channels, 2, stride=2, padding=0, bias=True)
    m.whiten.requires_grad_(False)
    return m.to(memory_format=torch.channels_last)
for widths, stride in [((32,64,128),1), ((32,64,128),2), ((48,96,192),2), ((64,128,256),2)]:
    m = make(widths, stride)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.85, nesterov=True)
    x = torch.randn(256,3,32,32).contiguous(memory_format=torch.channels_last); y = torch.randint(0,10,(256,))
    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16): loss = F.cross_entropy(m(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(3): step()
    ts=[]
    for _ in range(10):
        t=time.perf_counter(); step(); ts.append(time.perf_counter()-t)
    ts.sort()
    print(widths, 'stride', stride, 'params', sum(p.numel() for p in m.parameters()),
          'ms/step median %.1f' % (1e3 * ts[5]))
