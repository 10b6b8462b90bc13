#pragma once
#include "kiln/core/device.h"
#include "kiln/core/dtype.h"
#include "kiln/core/error.h"
#include "kiln/core/receipt.h"
#include "kiln/core/stream.h"
#include "kiln/core/tensor_view.h"
#include "kiln/core/workspace.h"
