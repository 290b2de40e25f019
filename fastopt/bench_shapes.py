"""Parameter shape lists of real models, for the many-tensor benchmarks.

GPT-2 small (Hugging Face ``GPT2Model`` layout: 148 tensors, 124,439,808
parameters) and ResNet-50 (torchvision: 161 tensors, 25,557,032 parameters),
plus the synthetic case of 200 tensors of 1,000 elements.
"""


def gpt2_small(layers=12, d=768, vocab=50257, context=1024):
    shapes = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def resnet50(classes=1000):
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            out = 4 * width
            shapes += [(width, inplanes, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (out, width, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, inplanes, 1, 1), (out,), (out,)]
            inplanes = out
    return shapes + [(classes, 2048), (classes,)]


def small_tensors(count=200, size=1000):
    return [(size,)] * count


MODELS = {"gpt2-small": gpt2_small, "resnet50": resnet50, "200x1000": small_tensors}
