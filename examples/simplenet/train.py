"""Train SimpleNet on random data and save it as a state_dict and as TorchScript.

    python train.py            # writes simplenet_state.pt and simplenet_ts.pt here
    edgeship export simplenet_state.pt --arch model.py:SimpleNet --input x:1x10 --dynamic-batch
"""

import argparse
from pathlib import Path

import torch
import torch.nn as nn
from model import SimpleNet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = p.parse_args()

    torch.manual_seed(0)
    x_train, y_train = torch.randn(100, 10), torch.randn(100, 1)
    x_test, y_test = torch.randn(20, 10), torch.randn(20, 1)

    model = SimpleNet()
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(1, args.epochs + 1):
        model.train()
        optimizer.zero_grad()
        loss = criterion(model(x_train), y_train)
        loss.backward()
        optimizer.step()
        if epoch % 10 == 0:
            print(f"epoch {epoch:3d}/{args.epochs}  loss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        test_loss = criterion(model(x_test), y_test)
    print(f"test loss {test_loss.item():.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "simplenet_state.pt")
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 10)), args.out / "simplenet_ts.pt")
    print(f"saved {args.out / 'simplenet_state.pt'} (state_dict) and {args.out / 'simplenet_ts.pt'} (TorchScript)")


if __name__ == "__main__":
    main()
